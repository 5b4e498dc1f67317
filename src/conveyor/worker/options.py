"""How a worker behaves: its options, and the timings its loop and its attempts share."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from conveyor.limits import RateLimit
from conveyor.policy import DEFAULT_POLICY, RetryPolicy

#: How long an idle worker blocks on the queue's marker before looking again (seconds).
DRAIN_DELAY_S = 5.0
#: While Redis is unreachable, how long to wait between tries (seconds, doubling to the cap).
REDIS_RETRY_BASE_S = 0.1
REDIS_RETRY_CAP_S = 2.0


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker behaves; built from Settings by the service."""

    queue: str
    prefix: str = "bull"
    concurrency: int = 10
    default_policy: RetryPolicy = DEFAULT_POLICY
    lock_duration_ms: int = 30_000
    stalled_interval_ms: int = 30_000
    max_stalled_count: int = 1
    failed_key_prefix: str = "failedJobs"
    job_timeout_s: float | None = None
    #: A job whose task no worker knows fails after waiting this long (see ``unknown``).
    unknown_task_timeout_s: float = 7 * 24 * 3600.0
    drain_delay_s: float = DRAIN_DELAY_S
    #: BullMQ Worker's ``limiter``: counted in the queue's limiter key with every worker
    #: (Conveyor's or Node's) of the queue that has the same limiter (see docs/flow-control.md).
    limiter: RateLimit | None = None
    #: How often the worker beats on the queue (0: never, and it judges no peer).
    heartbeat_interval_ms: int = 500
    #: A peer silent this long with no connection open is dead (see ``heartbeat``).
    dead_worker_after_ms: int = 2000
    name: str = field(default_factory=lambda: worker_name(os.getpid()))


def worker_name(pid: int, tag: str | None = None) -> str:
    """A worker's name, ``{host}:{pid}:{tag}``: the prefix of its lock tokens. A supervisor
    that chose ``tag`` knows its child's name, so whose jobs to release when it dies."""
    return f"{socket.gethostname()}:{pid}:{tag or uuid.uuid4().hex[:6]}"
