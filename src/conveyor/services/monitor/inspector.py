"""What the monitor knows about the queues: which exist, their counts, their workers.

One ``Inspector`` per monitor (or ``conveyor stats`` run) holds one Redis client and a
``QueueClient`` per queue. Queues are the configured ones plus, unless turned off, those found
by a bounded SCAN for ``{prefix}:*:meta`` keys (cached for ``DISCOVERY_TTL_S``).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from conveyor._bullmq import FlowState
from conveyor.client import QueueClient
from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.errors import ConveyorError
from conveyor.jobs import COUNTED_STATES
from conveyor.log import get_logger
from conveyor.observability.metrics import QueueMetrics
from conveyor.observability.stats import TaskTotals, read_totals
from conveyor.services.redis_connection import QueueConnections

log = get_logger("conveyor.monitor")

#: How long a queue discovery is reused (seconds).
DISCOVERY_TTL_S = 30.0
#: Keys one discovery looks at, at most (SCAN COUNT per call, and calls).
DISCOVERY_SCAN_COUNT = 1000
DISCOVERY_MAX_KEYS = 200_000
#: Queues shown at most (the configured ones always are).
MAX_QUEUES = 200


class UnknownQueueError(ConveyorError):
    """Raised when a request names a queue the monitor does not know."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"unknown queue {queue!r}")


@dataclass(frozen=True)
class WorkerInfo:
    """A worker connection as Redis's CLIENT LIST shows it."""

    queue: str
    name: str
    addr: str
    age_s: int
    idle_s: int


@dataclass(frozen=True)
class QueueSummary:
    """A queue's counts by state and what goes with them."""

    name: str
    counts: dict[str, int]
    paused: bool
    workers: int
    oldest_waiting_s: float
    totals: dict[str, TaskTotals] = field(default_factory=dict)
    #: The queue-wide limits and whether they hold the queue back (docs/flow-control.md).
    flow: FlowState | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "counts": self.counts,
            "paused": self.paused,
            "workers": self.workers,
            "oldest_waiting_s": round(self.oldest_waiting_s, 3),
            "limits": flow_json(self.flow),
            "totals": {
                "completed": sum(t.completed for t in self.totals.values()),
                "failed": sum(t.failed for t in self.totals.values()),
                "retried": sum(t.retried for t in self.totals.values()),
                "deferred": sum(t.deferred for t in self.totals.values()),
            },
        }

    def to_metrics(self) -> QueueMetrics:
        return QueueMetrics(
            queue=self.name,
            counts=self.counts,
            paused=self.paused,
            workers=self.workers,
            oldest_waiting_s=self.oldest_waiting_s,
            totals=self.totals,
            flow=self.flow,
        )


def flow_json(flow: FlowState | None) -> dict[str, object] | None:
    """A queue's limits for the dashboard (None: not read)."""
    if flow is None:
        return None
    rate = flow.limits.rate
    return {
        "rate": None if rate is None else {"max": rate.max, "duration_ms": rate.duration_ms},
        "concurrency": flow.limits.concurrency,
        "limited_ms": flow.limited_ms,
        "held": flow.held,
        "maxed": flow.maxed,
    }


def worker_name_matcher(prefix: str, queue: str) -> tuple[str, str]:
    """Node BullMQ's Queue.getWorkers rule: the connection name is ``{prefix}:{b64(queue)}``
    (an unnamed worker) or starts with ``{prefix}:{b64(queue)}:w:`` (a named one)."""
    base = f"{prefix}:{base64.b64encode(queue.encode()).decode()}"
    return base, base + ":w:"


def _int(value: object) -> int:
    try:
        return int(str(value or 0))
    except ValueError:
        return 0


class Inspector:
    """Reads queues, counts and workers for the monitor and ``conveyor stats``."""

    def __init__(
        self, redis: Redis, settings: Settings, conns: QueueConnections | None = None
    ) -> None:
        """``conns``: the queues' own clients in a Redis Cluster (else ``redis`` for all)."""
        self.redis = redis
        self.conns = conns
        self.settings = settings
        self.prefix = settings.prefix
        self._clients: dict[str, QueueClient] = {}
        self._discovered: list[str] = []
        self._discovered_at = -DISCOVERY_TTL_S
        self._discovery_lock = asyncio.Lock()

    # --- queues ----------------------------------------------------------------------------------
    @property
    def configured(self) -> list[str]:
        names = [self.settings.queue, *self.settings.queue_weights, *self.settings.monitor_queues]
        return list(dict.fromkeys(names))

    async def queues(self) -> list[str]:
        """The configured queues, then the discovered ones, sorted."""
        if self.settings.monitor_discover_queues and not (self.conns and self.conns.cluster):
            async with self._discovery_lock:
                if time.monotonic() - self._discovered_at >= DISCOVERY_TTL_S:
                    self._discovered = await self.discover()
                    self._discovered_at = time.monotonic()
        configured = self.configured
        others = sorted(set(self._discovered) - set(configured))
        return (configured + others)[: max(MAX_QUEUES, len(configured))]

    async def discover(self) -> list[str]:
        """Queues of this prefix that have a ``meta`` key, from a bounded SCAN."""
        head = f"{self.prefix}:"
        found: set[str] = set()
        seen = 0
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(
                cursor, match=f"{head}*:meta", count=DISCOVERY_SCAN_COUNT
            )
            seen += DISCOVERY_SCAN_COUNT
            for key in keys:
                name = str(key)[len(head) : -len(":meta")]
                if name:
                    found.add(name)
            if cursor == 0 or seen >= DISCOVERY_MAX_KEYS or len(found) >= MAX_QUEUES:
                break
        if cursor != 0:
            log.info("queue_discovery_truncated", keys_scanned=seen)
        return sorted(found)

    async def client(self, queue: str) -> QueueClient:
        """The client of a known queue; UnknownQueueError for any other name."""
        if queue not in self._clients:
            if queue not in await self.queues():
                raise UnknownQueueError(queue)
            self._clients[queue] = QueueClient.from_settings(
                self.settings,
                redis=await self.conns.of(queue) if self.conns else self.redis,
                queue=queue,
                pipelined=False,  # read-mostly, one per queue, on the shared pool
            )
        return self._clients[queue]

    # --- counts ----------------------------------------------------------------------------------
    async def summary(
        self, queue: str, workers: list[WorkerInfo] | None = None, *, totals: bool = True
    ) -> QueueSummary:
        client = await self.client(queue)
        if workers is None:
            workers = await self.workers([queue])
        counts, paused, oldest, flow = await asyncio.gather(
            client.counts(), client.is_paused(), self.oldest_waiting_s(client), client.flow_state()
        )
        return QueueSummary(
            name=queue,
            counts={state.value: counts.get(state, 0) for state in COUNTED_STATES},
            paused=paused,
            workers=sum(1 for w in workers if w.queue == queue),
            oldest_waiting_s=oldest,
            totals=await read_totals(client.redis, self.prefix, queue) if totals else {},
            flow=flow,
        )

    async def overview(self, *, totals: bool = True) -> list[QueueSummary]:
        """Every queue's summary (one CLIENT LIST shared by all)."""
        names = await self.queues()
        workers = await self.workers(names)
        return list(await asyncio.gather(*(self.summary(n, workers, totals=totals) for n in names)))

    async def _client_list(self, queues: list[str]) -> list[dict[str, Any]]:
        """CLIENT LIST of every Redis the queues live on (their masters, in a cluster)."""
        if not (self.conns and self.conns.cluster):
            return list(await self.redis.client_list())
        servers = {id(c.redis): c.redis for c in [await self.client(q) for q in queues]}
        return [entry for redis in servers.values() for entry in await redis.client_list()]

    async def oldest_waiting_s(self, client: QueueClient) -> float:
        """Age of the job that has waited longest in the wait (or paused) list."""
        due = await client.bull.oldest_waiting_due_ms()
        return 0.0 if due is None else max(0.0, (now_ms() - due) / 1000)

    # --- workers ---------------------------------------------------------------------------------
    async def workers(self, queues: Iterable[str] | None = None) -> list[WorkerInfo]:
        """Connected workers of the given queues (default: all), as Node's getWorkers finds
        them: by their blocking connection's name."""
        names = list(queues) if queues is not None else await self.queues()
        matchers = {queue: worker_name_matcher(self.prefix, queue) for queue in names}
        found = []
        for entry in await self._client_list(names):
            conn = str(entry.get("name", ""))
            for queue, (exact, named) in matchers.items():
                if conn == exact or conn.startswith(named):
                    found.append(
                        WorkerInfo(
                            queue=queue,
                            name=conn[len(named) :] if conn.startswith(named) else "",
                            addr=str(entry.get("addr", "")),
                            age_s=_int(entry.get("age")),
                            idle_s=_int(entry.get("idle")),
                        )
                    )
        return sorted(found, key=lambda w: (w.queue, w.name))
