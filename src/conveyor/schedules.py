"""A schedule: a task run every N ms or on a cron pattern, kept in Redis as a BullMQ job
scheduler (``conveyor._bullmq.schedulers`` speaks that format). Pure values and decisions.

BullMQ's rules, which Conveyor keeps (Node and Conveyor run the same schedules):

- one job per slot, its id ``repeat:{schedule id}:{slot ms}``; a worker that takes it creates
  the next slot's job at once (``next_cron_ms`` for a cron; the Lua script for ``every``);
- ``every``: slots on multiples of ``every`` from an offset fixed at creation; slots missed
  while nothing ran are skipped, the next one is the first one after now;
- ``cron``: the next run after now (or after ``start``) in ``tz``; ``end``: no slot after
  it; ``limit``: that many runs in all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor.cron import check_pattern, next_cron_ms, zone
from conveyor.errors import ScheduleError

#: Ids Conveyor creates (API, code): they name keys (``repeat:{id}``) and job ids
#: (``repeat:{id}:{ms}``), so no ``:``, ``/`` or spaces. Node may create others; those are
#: listed and run all the same.
SCHEDULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: The longest interval accepted: a year.
MAX_EVERY_MS = 366 * 24 * 3600 * 1000
MAX_LIMIT = 2**31 - 1


def check_id(schedule_id: str) -> None:
    if not SCHEDULE_ID.match(schedule_id):
        raise ScheduleError(
            f"schedule id {schedule_id!r}: 1 to 128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def to_ms(value: datetime | int | None, what: str) -> int | None:
    """A start or end given as epoch ms or an aware datetime, in epoch ms."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ScheduleError(f"{what}: epoch milliseconds or a date with a time zone")
    if isinstance(value, int):
        if value < 0:
            raise ScheduleError(f"{what}: epoch milliseconds, not negative")
        return value
    if value.tzinfo is None:
        raise ScheduleError(f"{what}: give the date a time zone (…Z or +01:00)")
    return int(value.timestamp() * 1000)


@dataclass(frozen=True)
class Schedule:
    """What a schedule runs and when: exactly one of ``every_ms`` and ``cron``.

    Raises ScheduleError when it cannot be stored (bad id, pattern, zone, interval, dates)."""

    id: str
    task: str
    data: Any = field(default_factory=dict)
    every_ms: int | None = None
    cron: str | None = None
    tz: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        check_id(self.id)
        if not self.task:
            raise ScheduleError("a schedule names its task")
        if (self.every_ms is None) == (self.cron is None):
            raise ScheduleError("give exactly one of every_ms and cron")
        if self.every_ms is not None and not 0 < self.every_ms <= MAX_EVERY_MS:
            raise ScheduleError(f"every_ms: from 1 to {MAX_EVERY_MS} (a year)")
        if self.cron is not None:
            check_pattern(self.cron)
        if self.tz is not None:
            if self.cron is None:
                raise ScheduleError("tz applies to a cron pattern, not to every_ms")
            zone(self.tz)
        if self.limit is not None and not 0 < self.limit <= MAX_LIMIT:
            raise ScheduleError(f"limit: from 1 to {MAX_LIMIT}")
        for what, value in (("start", self.start_ms), ("end", self.end_ms)):
            if value is not None and value < 0:
                raise ScheduleError(f"{what}: epoch milliseconds, not negative")
        ordered = self.start_ms is None or self.end_ms is None or self.end_ms > self.start_ms
        if not ordered:
            raise ScheduleError("end must come after start")

    def first_run_ms(self, now_ms: int) -> int | None:
        """When a cron schedule created at ``now_ms`` first runs (None: never); for ``every``
        BullMQ's script decides (None here)."""
        if self.cron is None:
            return None
        return cron_next(self.cron, self.tz, now_ms, self.start_ms, self.end_ms)


def cron_next(
    pattern: str, tz: str | None, now_ms: int, start_ms: int | None, end_ms: int | None
) -> int | None:
    """BullMQ's next run of a cron scheduler: after ``now`` (or just before ``start``),
    None when past ``end``."""
    if end_ms is not None and now_ms > end_ms:
        return None
    base = now_ms if start_ms is None or start_ms <= now_ms else start_ms
    nxt = next_cron_ms(pattern, tz, base)
    if nxt is None or (end_ms is not None and nxt > end_ms):
        return None
    return max(nxt, now_ms)


def lag_ms(next_ms: int | None, taken: bool, now_ms: int) -> int:
    """How late a schedule's due run is: 0 until its slot, or once a worker took it."""
    if next_ms is None or taken or now_ms <= next_ms:
        return 0
    return now_ms - next_ms
