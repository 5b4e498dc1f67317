"""What every part of ``BullQueue`` shares: one queue's keys, its registered scripts, how a
script call is made (on a pipeline, the worker's per-tick batch, or alone), and the decoding
of what the fetching scripts return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from conveyor._bullmq.layout import FETCH_KEY_TYPES, KEY_TYPES
from conveyor._bullmq.record import JobRecord, as_dict
from conveyor._bullmq.scripts import (
    MOVE_TO_FAILED,
    SCRIPT_FILES,
    move_to_failed_source,
    script_source,
)
from conveyor.failures import FailureStore
from conveyor.jobs import JobState
from conveyor.keys import FailureKeys
from conveyor.pipeline import AutoPipeline
from conveyor.resp import RespConnection

#: msgpack of a script argument, with one Packer kept instead of one made per call (packb's
#: set-up is most of its time for such small values: the add path and the finishing calls pack
#: one to three a job). Safe to share: packing the plain values they send runs no Python code,
#: so no other thread can come between under the GIL, and a pack that raises resets the Packer.
pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack


def flat(pairs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key, value in pairs.items():
        out.extend((key, value))
    return out


@dataclass(frozen=True)
class Fetched:
    """What moveToActive (or a finish that fetched the next job) returned."""

    job: JobRecord | None
    #: When rate limited: ms until the limit lifts.
    limit_until_ms: int = 0
    #: When nothing is ready: timestamp (ms) of the next delayed job, 0 if none.
    next_delayed_ms: int = 0


def fetched(raw: Any) -> Fetched:
    if not raw or not isinstance(raw, list | tuple):
        return Fetched(job=None)
    job = None
    if raw[0]:
        job = JobRecord.from_hash(str(raw[1]), as_dict(raw[0]))
    limit = int(raw[2] or 0) if len(raw) > 2 else 0
    delayed = int(raw[3] or 0) if len(raw) > 3 else 0
    return Fetched(job=job, limit_until_ms=limit, next_delayed_ms=delayed)


def state_of(raw: Any) -> JobState:
    try:
        return JobState(str(raw))
    except ValueError:
        return JobState.UNKNOWN


class QueueBase:
    """One BullMQ queue (prefix + name) on one Redis client: its keys and script calls."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        prefix: str = "bull",
        *,
        hot_path: RespConnection | None = None,
    ) -> None:
        self.redis = redis
        #: With a hot-path connection, script calls made without an explicit pipeline are
        #: batched per event-loop tick on it (the worker's fast path).
        self._auto = AutoPipeline(hot_path) if hot_path is not None else None
        self.name = name
        self.prefix = prefix
        #: Set by a worker: stored on each job it takes as BullMQ's ``processedBy``.
        self.worker_name: str | None = None
        self.base = f"{prefix}:{name}:"
        self.keys = {kind: f"{prefix}:{name}:{kind}" for kind in KEY_TYPES}
        #: The keys BullMQ's moveToActive and moveToFinished start with (hot path: built once).
        self._fetch_keys = self._keys(*FETCH_KEY_TYPES)
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_FILES
        }
        self._scripts[MOVE_TO_FAILED] = redis.register_script(move_to_failed_source())

    def job_key(self, job_id: str) -> str:
        return self.base + job_id

    def failure_store(self, failed_key_prefix: str = "failedJobs") -> FailureStore:
        """The failure records of this queue (see ``conveyor.keys.FailureKeys``)."""
        keys = FailureKeys(self.prefix, self.name, failed_key_prefix)
        return FailureStore(self.redis, keys, failed_set=self.keys["failed"])

    def _keys(self, *kinds: str) -> list[str]:
        return [self.keys[k] for k in kinds]

    def _run(self, script: str, keys: list[str], args: list[Any], pipe: Pipeline | None) -> Any:
        if pipe is None and self._auto is not None:
            return self._auto.call(self._scripts[script], keys, args)
        return self._scripts[script](keys=keys, args=args, client=pipe)
