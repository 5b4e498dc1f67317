"""Flow-control values: a rate limit (``max`` jobs per ``duration_ms``), a queue's limits, and
the ``"100/s"`` notation that settings and tasks use. Pure values; Redis is ``_bullmq.limits``.

BullMQ keeps a queue-wide rate limit as ``max`` and ``duration`` in the queue's meta hash and
a queue-wide concurrency as ``concurrency`` there (what Node's ``setGlobalRateLimit`` and
``setGlobalConcurrency`` write); a worker's own ``limiter`` is the same pair passed to
moveToActive. The bounds below keep every value one that BullMQ's scripts handle exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.errors import LimitError

#: Largest ``max`` of a rate limit. BullMQ's manual hold (Node's ``rateLimit(ms)``, Conveyor's
#: ``RateLimited``) sets the limiter counter to Number.MAX_SAFE_INTEGER: any max at or below
#: it keeps the hold; this one leaves ample room.
MAX_RATE_MAX = 1_000_000_000
#: Longest window of a rate limit, and longest manual hold (ms): one week.
MAX_DURATION_MS = 7 * 24 * 3600 * 1000
#: Largest queue-wide or per-task concurrency.
MAX_CONCURRENCY = 1_000_000
#: What BullMQ's manual hold writes into the limiter key (Number.MAX_SAFE_INTEGER).
HOLD_COUNTER = 2**53 - 1

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


@dataclass(frozen=True)
class RateLimit:
    """At most ``max`` jobs start in each window of ``duration_ms`` (BullMQ's limiter)."""

    max: int
    duration_ms: int

    def __post_init__(self) -> None:
        check_rate(self.max, self.duration_ms)

    @property
    def per_second(self) -> float:
        return self.max * 1000 / self.duration_ms

    def __str__(self) -> str:
        for unit, ms in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if self.duration_ms == ms:
                return f"{self.max}/{unit}"
        return f"{self.max}/{self.duration_ms}ms"


@dataclass(frozen=True)
class QueueLimits:
    """A queue's limits: its rate limit and its concurrency (None: no such limit)."""

    rate: RateLimit | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None:
            check_concurrency(self.concurrency)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_rate(max_jobs: object, duration_ms: object) -> None:
    """Raise LimitError unless ``max_jobs`` per ``duration_ms`` is a usable rate limit."""
    if not _is_int(max_jobs) or not 1 <= max_jobs <= MAX_RATE_MAX:  # type: ignore[operator]
        raise LimitError(f"a rate limit's max must be an integer from 1 to {MAX_RATE_MAX}")
    if not _is_int(duration_ms) or not 1 <= duration_ms <= MAX_DURATION_MS:  # type: ignore[operator]
        raise LimitError(
            f"a rate limit's duration_ms must be an integer from 1 to {MAX_DURATION_MS}"
        )


def check_concurrency(value: object) -> None:
    """Raise LimitError unless ``value`` is a usable concurrency."""
    if not _is_int(value) or not 1 <= value <= MAX_CONCURRENCY:  # type: ignore[operator]
        raise LimitError(f"a concurrency must be an integer from 1 to {MAX_CONCURRENCY}")


def parse_rate(text: str) -> RateLimit:
    """``"100/s"``, ``"5/1500ms"``, ``"600/m"``, ``"10/2s"`` -> a RateLimit."""
    count, slash, per = text.strip().partition("/")
    if not slash:
        raise LimitError(f"a rate limit is written max/period, like 100/s or 5/1500ms: {text!r}")
    per = per.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h") if per.endswith(u)), None)
    number = per[: -len(unit)] if unit else per
    number = number.strip() or "1"
    count = count.strip()
    if unit is None or not (number.isascii() and number.isdigit()):
        raise LimitError(f"a rate limit's period is a number of ms, s, m or h: {text!r}")
    if not (count.isascii() and count.isdigit()):
        raise LimitError(f"a rate limit's max is a whole number: {text!r}")
    return RateLimit(int(count), int(number) * _UNITS_MS[unit])


def hold_ms(retry_after_s: float) -> int:
    """A hold of ``retry_after_s`` (checked by ``RateLimited``) in BullMQ's whole ms, >= 1."""
    return max(1, min(round(retry_after_s * 1000), MAX_DURATION_MS))
