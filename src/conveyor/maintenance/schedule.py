"""When cleanup runs: once per interval across every replica, on a schedule kept in Redis.

Three keys per queue (``<prefix>:<queue>:conveyor:cleanup:...``, ``conveyor.keys.CleanupKeys``;
versions before kept them at ``conveyor:cleanup:<prefix>:<queue>:...``, which are still read,
see ``CleanupKeys``):

- ``last-run``: the start time (ms) of the last successful scheduled run. A replica runs when
  ``now >= last-run + interval``; a restarted replica reads it back, so restarts neither skip
  nor repeat a run.
- ``lease``: a redis-py ``Lock`` (``SET NX PX`` with a token) taken before a run and renewed
  while it lasts. ``last-run`` is read again under the lease and written, with the run's
  record, in the same script that releases the lease (token checked), so a second replica
  that gets the lease next sees the new ``last-run`` and does nothing: one run per interval.
  If the runner dies, the lease expires and another replica does the (idempotent) work.
- ``runs``: the newest run records (JSON), newest first, capped at ``RUNS_KEPT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from conveyor import lua
from conveyor.clock import now_ms
from conveyor.errors import ConveyorError
from conveyor.keys import CleanupKeys
from conveyor.log import get_logger
from conveyor.maintenance.remover import Cleaner
from conveyor.maintenance.retention import CleanupReport, Trigger, is_due, iso_ms, next_due_ms

log = get_logger("conveyor.cleanup")

#: Run records kept per queue.
RUNS_KEPT = 100
#: Lifetime of the run lease; renewed every third of it while a run lasts.
LEASE_MS = 60_000
#: Longest sleep between two looks at the schedule (a changed interval is seen this soon).
POLL_S = 60.0
#: Wait after an error (Redis down) before the next look, doubling to POLL_S.
ERROR_BACKOFF_S = 1.0
#: A replica that finds another running the cleanup looks again this soon (one GET), so it
#: learns of the finished run, and takes over a run whose holder died, without waiting POLL_S.
BUSY_RECHECK_MS = 1_000

Clock = Callable[[], int]


class CleanupBusyError(ConveyorError):
    """Raised when a manual cleanup run finds another run in progress (the lease is held)."""


@dataclass(frozen=True)
class Lease:
    """A held run lease: redis-py's locks at the lease key and at the legacy one (so a replica
    of an earlier version cannot run meanwhile), and their token (the finishing script
    checks it)."""

    locks: tuple[Lock, ...]
    token: str

    async def reacquire(self) -> None:
        for lock in self.locks:
            await lock.reacquire()

    async def release(self) -> None:
        for lock in self.locks:
            with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
                await lock.release()


async def read_runs(redis: Redis, keys: CleanupKeys, count: int = 20) -> list[CleanupReport]:
    """The newest ``count`` run records, newest first (what the monitor shows); those an
    earlier version recorded at the legacy key come after this version's."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lrange(keys.runs, 0, count - 1)
        pipe.lrange(keys.legacy_runs, 0, count - 1)
        current, legacy = await pipe.execute()
    reports = []
    for raw in [*current, *legacy][:count]:
        with contextlib.suppress(ValueError, TypeError):
            reports.append(CleanupReport.from_json(str(raw)))
    return reports


def _ms(raw: object) -> int | None:
    try:
        return int(str(raw)) if raw is not None else None
    except ValueError:
        return None


async def read_last_run_ms(redis: Redis, keys: CleanupKeys) -> int | None:
    """The later of the last-run times at the key and at the legacy key."""
    times = [_ms(raw) for raw in await redis.mget(keys.last_run, keys.legacy_last_run)]
    known = [t for t in times if t is not None]
    return max(known) if known else None


class CleanupScheduler:
    """Runs a Cleaner once per interval, whatever the number of replicas running this."""

    def __init__(
        self,
        redis: Redis,
        cleaner: Cleaner,
        *,
        interval_s: float,
        clock: Clock = now_ms,
        lease_ms: int = LEASE_MS,
        poll_s: float = POLL_S,
        runs_kept: int = RUNS_KEPT,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.redis = redis
        self.cleaner = cleaner
        self.interval_s = interval_s
        self.clock = clock
        self.lease_ms = lease_ms
        self.poll_s = poll_s
        self.runs_kept = runs_kept
        self.keys = CleanupKeys.for_queue(cleaner.prefix, cleaner.queue)
        self._finish = redis.register_script(lua.source("cleanup_finish"))
        #: How many times this scheduler looked at the schedule (for tests and logs).
        self.ticks = 0
        self._next_check_ms = 0
        self._announced_ms: int | None = None

    # --- the lease -------------------------------------------------------------------------------
    async def _acquire(self) -> Lease | None:
        token = uuid.uuid4().hex
        held: list[Lock] = []
        for key in (self.keys.lease, self.keys.legacy_lease):
            lock = self.redis.lock(
                key, timeout=self.lease_ms / 1000, blocking=False, thread_local=False
            )
            if not await lock.acquire(token=token):
                await Lease(tuple(held), token).release()
                return None
            held.append(lock)
        return Lease(tuple(held), token)

    async def _keep_renewing(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await lease.reacquire()  # back to the full lifetime
            except LockError:
                log.warning("cleanup_lease_lost", queue=self.cleaner.queue)
                return
            except RedisError as exc:
                log.warning("cleanup_lease_renewal_failed", error=str(exc))

    async def _record(
        self, report: CleanupReport, lease: Lease | None, last_run_ms: int | None
    ) -> None:
        """Record the run (and a scheduled run's time) and release the lease, in one script."""
        await self._finish(
            keys=[
                self.keys.lease,
                self.keys.last_run,
                self.keys.runs,
                self.keys.legacy_lease,
                self.keys.legacy_last_run,
            ],
            args=[
                "" if lease is None else lease.token,
                "" if last_run_ms is None else last_run_ms,
                report.to_json(),
                self.runs_kept,
            ],
        )
        event = "cleanup_dry_run" if report.dry_run else "cleanup_finished"
        log.info(event, **report.log_fields())

    async def _leased_run(self, lease: Lease, now_ms: int, *, scheduled: bool) -> CleanupReport:
        renewal = asyncio.create_task(self._keep_renewing(lease), name="conveyor-cleanup-lease")
        try:
            trigger: Trigger = "schedule" if scheduled else "manual"
            report = await self.cleaner.run(now_ms, trigger=trigger)
            await self._record(report, lease, now_ms if scheduled else None)
            return report
        except BaseException:
            with contextlib.suppress(RedisError, OSError):
                await lease.release()
            raise
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal

    # --- scheduled runs --------------------------------------------------------------------------
    async def tick(self, now_ms: int) -> CleanupReport | None:
        """Look at the schedule once; run if due and this replica wins the lease."""
        self.ticks += 1
        last = await read_last_run_ms(self.redis, self.keys)
        if not is_due(last, now_ms, self.interval_s):
            self._wait_for_run(last)
            return None
        lease = await self._acquire()
        if lease is None:  # another replica is running it right now
            self._next_check_ms = now_ms + min(
                self.lease_ms, round(self.poll_s * 1000), BUSY_RECHECK_MS
            )
            return None
        last = await read_last_run_ms(self.redis, self.keys)  # again, under the lease
        if not is_due(last, now_ms, self.interval_s):
            await lease.release()
            self._wait_for_run(last)
            return None
        log.info(
            "cleanup_started",
            queue=self.cleaner.queue,
            last_run=iso_ms(last) if last is not None else "never",
        )
        report = await self._leased_run(lease, now_ms, scheduled=True)
        self._wait_for_run(now_ms)
        return report

    def _wait_for_run(self, last_run_ms: int | None) -> None:
        """Sleep until the next run is due; say when that is whenever it changes."""
        due = next_due_ms(last_run_ms, self.interval_s)
        self._next_check_ms = due
        if due != self._announced_ms:
            self._announced_ms = due
            log.info(
                "cleanup_scheduled",
                queue=self.cleaner.queue,
                last_run=iso_ms(last_run_ms) if last_run_ms is not None else "never",
                next_run=iso_ms(due),
            )

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set, sleeping until the next run is due (at most poll_s)."""
        log.info(
            "cleanup_scheduler_started",
            queue=self.cleaner.queue,
            interval_s=self.interval_s,
            failed_retention_s=self.cleaner.policy.failed_s,
            completed_retention_s=self.cleaner.policy.completed_s,
        )
        backoff = ERROR_BACKOFF_S
        while not stop.is_set():
            try:
                await self.tick(self.clock())
                delay = (self._next_check_ms - self.clock()) / 1000
                backoff = ERROR_BACKOFF_S
            except (RedisError, OSError, ConveyorError) as exc:
                log.error("cleanup_error", error=str(exc))
                delay, backoff = backoff, min(backoff * 2, self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.01, min(delay, self.poll_s)))

    # --- manual runs -----------------------------------------------------------------------------
    async def run_now(self, now_ms: int, *, dry_run: bool = False) -> CleanupReport:
        """A manual run (``conveyor cleanup --once``): recorded in the history but leaves the
        schedule alone. A real run takes the lease (CleanupBusyError if a run is in
        progress); a dry run only reads."""
        if dry_run:
            report = await self.cleaner.preview(now_ms)
            await self._record(report, None, None)
            return report
        lease = await self._acquire()
        if lease is None:
            holder_ttl = max(
                await self.redis.pttl(self.keys.lease),
                await self.redis.pttl(self.keys.legacy_lease),
            )
            raise CleanupBusyError(
                f"another cleanup run of queue {self.cleaner.queue!r} is in progress "
                f"(its lease expires within {max(holder_ttl, 0) / 1000:.0f} s); try again later"
            )
        return await self._leased_run(lease, now_ms, scheduled=False)
