"""A worker's heartbeat, and how its peers tell a dead worker from a silent one.

Every ``heartbeat_interval_ms`` (500 ms) each worker sets its score in the queue's heartbeat
set to Redis's clock, on its hot-path connection (named ``{prefix}:{b64(queue)}:hb:{name}``),
at the multiples of the interval on its event loop's clock, so that the beat goes out in one
write with the cancel watch's look (``ticks``). One worker per interval (a short lease:
``LEASE_SHARE`` of the interval, as beats on the grid come exactly one interval apart and a
lease as long could still be held at the next) also looks at the peers silent for longer than
``dead_worker_after_ms`` (2 s). Silence alone proves nothing: a worker that is stopped
(SIGSTOP), whose event loop is blocked, that is starved of CPU or cut off from Redis is
silent too, and may still finish its jobs within their locks. So a silent peer is dead only
when, besides:

- it has **no connection open** to Redis (neither its job-waiting connection nor its hot
  path, by CLIENT LIST). The kernel closes a process's sockets when it dies, and Redis sees
  it at once; a stopped, blocked or slow process keeps them open, and so (until TCP gives up,
  minutes later) does a host cut off from Redis;
- this judge has been connected without a break since before the peer's last beat. After a
  Redis restart or failover every worker is reconnecting, and a live one's connection can be
  missing for a while: those peers are left to BullMQ's stalled-job check (lock expiry);
- the peer has not beaten since the judge looked (checked in the release script itself).

Then its jobs (those whose lock it still holds, by its tokens ``{name}:{n}``) go back to the
queue at once, counted as stalls (``_bullmq.recovery``). A worker wrongly judged dead (its
connections closed by someone else, e.g. Redis's ``timeout`` while it was stopped) is still
safe: every finishing script checks the lock token, so its late result is refused and logged
(``job_lock_lost``); the job is never finished twice.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError

from conveyor._bullmq import BullQueue
from conveyor.log import get_logger
from conveyor.resp import RespConnection
from conveyor.worker.attempt import cancelled_by_worker
from conveyor.worker.options import WorkerOptions
from conveyor.worker.stack import describe
from conveyor.worker.ticks import sleep_to_tick

log = get_logger("conveyor.worker")

#: The judge lease's length, as a share of the heartbeat interval.
LEASE_SHARE = 0.8
#: A peer silent this long is forgotten without a release: a live worker would have beaten,
#: and BullMQ's stalled check has recovered its jobs long since (it beats again if it lives).
FORGET_AFTER_MS = 600_000


class Heartbeat:
    """Beats for one worker and judges its silent peers (see the module's docstring)."""

    def __init__(self, bull: BullQueue, hot_path: RespConnection, options: WorkerOptions) -> None:
        self.bull = bull
        self.hot_path = hot_path
        self.options = options
        if options.heartbeat_interval_ms > 0:
            hot_path.client_name = bull.heartbeat_connection_name(options.name)
        #: Redis time (ms) of this worker's first beat on its current connection.
        self._steady_since_ms: int | None = None
        self._connects = -1
        self._failing = False

    async def run(self) -> None:
        interval = self.options.heartbeat_interval_ms / 1000
        if interval <= 0:
            return
        while True:
            try:
                await self.beat()
                self._failing = False
            except Exception as exc:  # Redis trouble or worse: try again next beat
                self._steady_since_ms = None
                if not self._failing:
                    log.warning("redis_error", where="heartbeat", error=describe(exc))
                self._failing = True
            if cancelled_by_worker():
                raise asyncio.CancelledError
            await sleep_to_tick(interval)

    async def beat(self) -> list[str]:
        """One beat; answers the ids of the jobs it released from dead peers."""
        options = self.options
        beat = await self.bull.heartbeat(
            options.name,
            silent_after_ms=options.dead_worker_after_ms,
            lease_ms=max(1, int(options.heartbeat_interval_ms * LEASE_SHARE)),
            forget_after_ms=max(FORGET_AFTER_MS, 4 * options.lock_duration_ms),
        )
        if self._steady_since_ms is None or self.hot_path.connects != self._connects:
            self._steady_since_ms = beat.now_ms
            self._connects = self.hot_path.connects
        suspects = [(name, seen) for name, seen in beat.silent if seen >= self._steady_since_ms]
        if not suspects:
            return []
        connected = await self.bull.connected_workers()
        released: list[str] = []
        for name, seen in suspects:
            if name in connected:
                continue  # silent but alive (stopped, blocked, slow, cut off): its lock rules
            jobs = await self.bull.release_worker(
                name,
                max_stalled_count=options.max_stalled_count,
                seen_beat_ms=seen,
                forget=True,
            )
            if jobs is None:
                continue  # it beat again meanwhile
            (log.warning if jobs else log.info)(
                "dead_worker_jobs_released",
                worker=name,
                silent_ms=beat.now_ms - seen,
                count=len(jobs),
                job_ids=",".join(jobs[:20]),
                by="heartbeat",
            )
            released += jobs
        return released

    async def leave(self) -> None:
        """Forget this worker's heartbeat (it stops cleanly, holding no job)."""
        if self.options.heartbeat_interval_ms <= 0:
            return
        with contextlib.suppress(RedisError, OSError):
            await self.bull.leave(self.options.name)
