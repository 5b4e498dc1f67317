"""Cron patterns as BullMQ computes them: the next run of a pattern in a time zone.

Node.js BullMQ asks ``cron-parser`` (5.x) for a job scheduler's next run; a Conveyor worker
that creates the next run of a schedule must pick the same instant, or the two would create
different slots. The fields are matched by ``cronsim`` (5 fields, or 6 with seconds first, as
``cron-parser`` reads them; ``L``, ``W``, ``#``, names); the wall clock is mapped to instants
here, the way ``cron-parser`` does it across daylight-saving changes:

- **spring forward**: a wall time the clock skips runs at the same distance after the jump
  (02:30 on a day that goes from 02:00 to 03:00 runs at 03:30), once;
- **fall back**: a wall time that happens twice runs once, at its first occurrence, unless
  the hour field matches every hour (``*``), in which case it runs at both.

``tests/interop/test_schedules_dst.py`` compares these rules with Node's own computation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor.errors import ScheduleError

#: cron-parser's shorthands, in its 6-field form.
MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
    "@secondly": "* * * * * *",
    "@weekdays": "0 0 0 * * 1-5",
    "@weekends": "0 0 0 * * 0,6",
}
#: Wall-clock candidates looked at before giving up (cronsim itself gives up after 50 years).
MAX_CANDIDATES = 50_000
#: Near a clock change, wall order is not time order (a skipped or repeated hour maps onto the
#: hour beside it): candidates this far past the first run found are compared too.
DST_WINDOW = timedelta(hours=3)
MAX_PATTERN_LENGTH = 256


def _fields(pattern: str) -> list[str]:
    text = pattern.strip()
    text = MACROS.get(text.lower(), text)
    fields = text.split()
    if len(fields) not in (5, 6):
        raise ScheduleError(
            f"cron pattern {pattern!r}: expected 5 fields (minute hour day month weekday) "
            "or 6 (with seconds first)"
        )
    if len(fields) == 5:
        fields.insert(0, "0")
    # cron-parser reads "?" in the day fields as "*".
    return [f.replace("?", "*") for f in fields]


@lru_cache(maxsize=256)
def _checked(pattern: str) -> tuple[str, bool]:
    """The 6-field form cronsim reads, and whether the hour field matches every hour."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ScheduleError(f"cron pattern: at most {MAX_PATTERN_LENGTH} characters")
    fields = _fields(pattern)
    expr = " ".join(fields)
    try:
        sim = CronSim(expr, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError) as exc:
        raise ScheduleError(f"cron pattern {pattern!r}: {exc or 'invalid'}") from None
    return expr, len(sim.hours) == 24


def check_pattern(pattern: str) -> None:
    """Raise ScheduleError when ``pattern`` is not a cron pattern BullMQ accepts."""
    _checked(pattern)


def zone(tz: str | None) -> ZoneInfo | None:
    """The IANA time zone ``tz`` (None: UTC); ScheduleError when there is no such zone."""
    if not tz:
        return None
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"unknown time zone {tz!r} (an IANA name like 'Europe/Paris')"
        raise ScheduleError(message) from None


def next_cron_ms(pattern: str, tz: str | None, after_ms: int) -> int | None:
    """The first run of ``pattern`` strictly after ``after_ms`` (epoch ms), in ``tz`` (UTC when
    None), in whole seconds; None when the pattern never runs again."""
    expr, every_hour = _checked(pattern)
    where: tzinfo = zone(tz) or UTC
    after_s = after_ms // 1000
    # The wall clock of ``after``, to the second; candidates start at that same wall time, or,
    # near a clock change, earlier: a repeated hour's second occurrence comes after ``after``
    # with an earlier wall time.
    wall = datetime.fromtimestamp(after_s, where).replace(tzinfo=None)
    back = timedelta(seconds=1) if _steady(where, after_s) else DST_WINDOW
    sim = CronSim(expr, wall - back)
    best: int | None = None
    best_wall: datetime | None = None
    for _ in range(MAX_CANDIDATES):
        try:
            candidate = next(sim)
        except StopIteration:
            break
        if best_wall is not None and candidate - best_wall > DST_WINDOW:
            break
        for instant in _instants(candidate, where, every_hour):
            if instant * 1000 > after_ms and (best is None or instant < best):
                best = instant
                best_wall = best_wall or candidate
        if best is not None and _steady(where, best):
            break  # no clock change near: wall order is time order
    return None if best is None else best * 1000


def _steady(where: tzinfo, instant: int) -> bool:
    """Whether the zone keeps one offset from DST_WINDOW before ``instant`` to after it (then
    no later wall time can run earlier)."""
    span = int(DST_WINDOW.total_seconds())
    before = datetime.fromtimestamp(instant - span, where).utcoffset()
    later = datetime.fromtimestamp(instant + span, where).utcoffset()
    return before == later


def _instants(wall: datetime, where: tzinfo, every_hour: bool) -> list[int]:
    """The instants (epoch s) at which cron-parser runs wall time ``wall``."""
    first = wall.replace(tzinfo=where, fold=0)
    # In a skipped hour, fold=0 reads the wall time with the offset before the jump: the same
    # distance after it, as cron-parser lands.
    instants = [int(first.timestamp())]
    if every_hour:
        second = wall.replace(tzinfo=where, fold=1)
        if second.utcoffset() != first.utcoffset() and _exists(second):
            instants.append(int(second.timestamp()))
    return instants


def _exists(moment: datetime) -> bool:
    """Whether a wall time really happens (it is not in a skipped hour)."""
    back = datetime.fromtimestamp(moment.timestamp(), moment.tzinfo)
    return back.replace(tzinfo=None) == moment.replace(tzinfo=None)
