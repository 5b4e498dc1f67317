"""A queue's flow control in BullMQ's format: the queue-wide limits in its meta hash (``max``
and ``duration``: Node's ``setGlobalRateLimit``; ``concurrency``: ``setGlobalConcurrency``),
the limiter key its scripts count jobs in, and the manual hold (Node's ``rateLimit(ms)`` +
``RateLimitError``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from conveyor import lua
from conveyor._bullmq.base import QueueBase
from conveyor._bullmq.scripts import script_error
from conveyor.errors import LimitError
from conveyor.keys import task_limit_keys
from conveyor.limits import HOLD_COUNTER, QueueLimits, RateLimit


@dataclass(frozen=True)
class FlowState:
    """A queue's limits and whether they hold it back right now."""

    limits: QueueLimits
    #: Jobs active now (BullMQ's active list).
    active: int
    #: ms until the rate limit (or a manual hold) lets workers take jobs again; 0: not limited.
    limited_ms: int
    #: True when the limiter key holds a manual hold (``RateLimited``, Node's rateLimit).
    held: bool

    @property
    def maxed(self) -> bool:
        """Whether the queue-wide concurrency is reached (workers take nothing more)."""
        concurrency = self.limits.concurrency
        return concurrency is not None and self.active >= concurrency


def _int(raw: Any) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None
        return int(value) if value.is_integer() else None


def decode_limits(concurrency: Any, max_jobs: Any, duration: Any) -> QueueLimits:
    """The meta hash's fields as QueueLimits. A value Conveyor would refuse to write (another
    client's, say) is still shown as long as BullMQ's scripts use it."""
    rate: RateLimit | None = None
    max_value, duration_value = _int(max_jobs), _int(duration)
    if max_value is not None and duration_value is not None:
        try:
            rate = RateLimit(max_value, duration_value)
        except LimitError:
            rate = None
    try:
        return QueueLimits(rate=rate, concurrency=_int(concurrency))
    except LimitError:
        return QueueLimits(rate=rate)


class QueueLimitCalls(QueueBase):
    """The flow-control calls of ``BullQueue``."""

    #: Set by a worker: BullMQ Worker's ``limiter`` option, passed to moveToActive and
    #: moveToFinished as Node passes it (None: no limiter of its own).
    limiter: dict[str, int] | None = None

    def set_limiter(self, rate: RateLimit | None) -> None:
        self.limiter = None if rate is None else {"max": rate.max, "duration": rate.duration_ms}

    def _hold_script(self) -> AsyncScript:
        script = getattr(self, "_hold", None)
        if script is None:
            script = self.redis.register_script(lua.source("limit_hold"))
            self._hold = script
        return script

    async def take_task_slot(
        self, job_id: str, task: str, rate: RateLimit | None, concurrency: int | None
    ) -> int:
        """A per-task limit (``lua/task_slot.lua``): 0 when the job may start (its slot is
        taken), -1 when the task's concurrency is reached, else ms until its rate window
        ends. On the worker's hot-path connection when it has one."""
        script = getattr(self, "_task_slot", None)
        if script is None:
            script = self.redis.register_script(lua.source("task_slot"))
            self._task_slot = script
        rate_key, running_key = task_limit_keys(self.prefix, self.name, task)
        args: list[Any] = [
            job_id,
            rate.max if rate else 0,
            rate.duration_ms if rate else 0,
            concurrency or 0,
            self.base,
        ]
        keys = [rate_key, running_key]
        if self._auto is not None:
            return int(await self._auto.call(script, keys, args))
        return int(await script(keys=keys, args=args))

    async def get_limits(self) -> QueueLimits:
        raw = await self.redis.hmget(self.keys["meta"], ["concurrency", "max", "duration"])
        return decode_limits(*raw)

    async def set_limits(
        self, limits: QueueLimits, parts: frozenset[str] = frozenset({"rate", "concurrency"})
    ) -> None:
        """Write the limits named in ``parts`` in one MULTI (None removes one), as Node's
        setGlobalRateLimit / setGlobalConcurrency and their remove* do, then wake the workers
        waiting on the queue's marker so a raised or removed limit applies at once."""
        meta = self.keys["meta"]
        async with self.redis.pipeline(transaction=True) as pipe:
            if "rate" in parts and limits.rate is None:
                pipe.hdel(meta, "max", "duration")
            elif "rate" in parts and limits.rate is not None:
                rate = limits.rate
                pipe.hset(meta, mapping={"max": rate.max, "duration": rate.duration_ms})
            if "concurrency" in parts and limits.concurrency is None:
                pipe.hdel(meta, "concurrency")
            elif "concurrency" in parts:
                pipe.hset(meta, "concurrency", str(limits.concurrency))
            pipe.zadd(self.keys["marker"], {"0": 0})
            await pipe.execute()

    async def flow_state(self) -> FlowState:
        """The limits, the active count and the limiter's state, read in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys["meta"], ["concurrency", "max", "duration"])
            pipe.llen(self.keys["active"])
            pipe.get(self.keys["limiter"])
            pipe.pttl(self.keys["limiter"])
            meta, active, counter, ttl = await pipe.execute()
        limits = decode_limits(*meta)
        count = _int(counter) or 0
        held = count >= HOLD_COUNTER and ttl > 0
        limited = held or (limits.rate is not None and count >= limits.rate.max and ttl > 0)
        return FlowState(limits, int(active), int(ttl) if limited else 0, held)

    async def hold(self, ms: int) -> int:
        """Hold the queue back for ``ms`` (a longer hold running is kept); answers the ms the
        hold lasts."""
        return int(await self._hold_script()(keys=[self.keys["limiter"]], args=[ms]))

    async def hold_and_release(self, job_id: str, token: str, ms: int) -> int:
        """A handler's ``RateLimited``: hold the queue for ``ms`` and move the job back to wait
        (BullMQ's moveJobFromActiveToWait: its attempts are untouched), in one MULTI: a crash
        leaves either both or neither (then the job, still locked, is recovered as stalled).
        Answers the hold's remaining ms."""
        keys = self._keys(
            "active", "wait", "stalled", "paused", "meta", "limiter", "prioritized", "marker",
            "events",
        )  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._hold_script()(keys=[self.keys["limiter"]], args=[ms], client=pipe)
            await self._run(
                "moveJobFromActiveToWait", keys, [job_id, token, self.job_key(job_id)], pipe
            )
            held, moved = await pipe.execute()
        if isinstance(moved, int) and moved < 0:
            raise script_error(moved, job_id, "moveJobFromActiveToWait", queue=self.name)
        return int(held)
