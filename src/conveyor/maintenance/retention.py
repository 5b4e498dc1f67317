"""Retention: what cleanup removes and when it runs, as pure functions of their arguments
and ``now`` (tested by tables).

What goes: failed jobs that finished at or before ``now - retention`` and the
failure records that failed at or before it; completed jobs likewise when a
completed retention is set. When: a run is due once ``interval`` has passed since the last
successful run (the time of that run lives in Redis, see ``schedule.py``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from conveyor.errors import ConfigurationError

#: Units ``parse_duration`` knows, in seconds.
DURATION_UNITS_S: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

Trigger = Literal["schedule", "manual"]


def parse_duration(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"1h30m"``, ``"90s"``, ``"2w"`` or plain seconds -> seconds.

    Raises ConfigurationError (naming the accepted forms) for anything else.
    """
    raw = text.strip().lower()
    if _NUMBER.fullmatch(raw):
        return float(raw)
    if not _DURATION.fullmatch(raw):
        raise ConfigurationError(
            f"invalid duration {text!r}: use a number of seconds or e.g. 90s, 30m, 12h, 7d, 2w"
        )
    total = 0.0
    for number, unit in _DURATION_PART.findall(raw):
        total += float(number) * DURATION_UNITS_S[unit]
    return total


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits: 604800 -> ``"7d"``, 5400 -> ``"90m"``."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError("a duration is a finite number of seconds, at least 0")
    for unit in ("w", "d", "h", "m"):
        size = DURATION_UNITS_S[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long finished jobs are kept. ``completed_s=None`` leaves completed jobs alone."""

    failed_s: float
    completed_s: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("failed", self.failed_s), ("completed", self.completed_s)):
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise ConfigurationError(f"{name} retention must be at least 0 seconds")

    def failed_cutoff_ms(self, now_ms: int) -> int:
        """Failed jobs and records at or before this time (ms) go."""
        return cutoff_ms(now_ms, self.failed_s)

    def completed_cutoff_ms(self, now_ms: int) -> int | None:
        """Completed jobs at or before this time (ms) go; None: keep them all."""
        return None if self.completed_s is None else cutoff_ms(now_ms, self.completed_s)


def cutoff_ms(now_ms: int, retention_s: float) -> int:
    """The newest finish time (ms) that is already older than the retention."""
    return now_ms - round(retention_s * 1000)


@dataclass(frozen=True)
class FailureEntry:
    """One entry of the failure index, with what a cleanup needs to decide about it."""

    record_key: str
    failed_at_ms: int
    #: The record's queue and prefix; None when the record itself is gone (a dangling entry).
    queue: str | None
    prefix: str | None
    #: finishedOn of the record's job in its queue's failed set; None: not in the failed set
    #: (retried, removed, or removed on failure by removeOnFail).
    job_finished_ms: int | None

    @property
    def dangling(self) -> bool:
        return self.queue is None


def select_expired(
    entries: Iterable[FailureEntry],
    now_ms: int,
    policy: RetentionPolicy,
    *,
    queue: str,
    prefix: str,
) -> list[FailureEntry]:
    """The entries a cleanup of ``prefix:queue`` at ``now_ms`` removes.

    An entry goes when it failed at or before the cutoff and either its record is gone (only
    the index entry is left) or it belongs to this queue and its job goes too (finished at or
    before the cutoff) or is already gone. Records of other queues are never touched, and a
    record whose job stays in the failed set stays with it.
    """
    cutoff = policy.failed_cutoff_ms(now_ms)
    chosen = []
    for entry in entries:
        ours = entry.queue == queue and entry.prefix == prefix
        job_goes = entry.job_finished_ms is None or entry.job_finished_ms <= cutoff
        if entry.failed_at_ms <= cutoff and (entry.dangling or (ours and job_goes)):
            chosen.append(entry)
    return chosen


def is_due(last_run_ms: int | None, now_ms: int, interval_s: float) -> bool:
    """Whether a scheduled run is due: never ran, or ``interval`` has passed since."""
    return last_run_ms is None or now_ms >= next_due_ms(last_run_ms, interval_s)


def next_due_ms(last_run_ms: int | None, interval_s: float, now_ms: int = 0) -> int:
    """When the next scheduled run is due (``now_ms`` if it never ran)."""
    if last_run_ms is None:
        return now_ms
    return last_run_ms + round(interval_s * 1000)


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC (``2026-01-01T00:00:00.000Z``)."""
    stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class CleanupReport:
    """What one cleanup run removed (or, in a dry run, would remove). Stored as JSON in the
    queue's run history, newest first, so the monitor can show it."""

    queue: str
    prefix: str
    trigger: Trigger
    dry_run: bool
    started_at_ms: int
    finished_at_ms: int
    failed_retention_s: float
    failed_cutoff_ms: int
    completed_retention_s: float | None
    completed_cutoff_ms: int | None
    failed_jobs_removed: int
    failure_records_removed: int
    completed_jobs_removed: int
    #: Index entries dropped because their record no longer existed.
    index_entries_dropped: int = 0
    #: Who ran it (host:pid).
    runner: str = ""
    #: A few of the job ids removed (or that would be), for the log and the dry run.
    sample_job_ids: list[str] = field(default_factory=list)

    @property
    def started_at(self) -> str:
        return iso_ms(self.started_at_ms)

    @property
    def duration_ms(self) -> int:
        return self.finished_at_ms - self.started_at_ms

    def to_json(self) -> str:
        doc: dict[str, Any] = asdict(self)
        doc["started_at"] = self.started_at
        doc["duration_ms"] = self.duration_ms
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> CleanupReport:
        doc = json.loads(raw)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})

    def log_fields(self) -> dict[str, Any]:
        """The log line's fields; a dry run says what it *would* remove, having removed none."""
        counts = {
            "failed_jobs": self.failed_jobs_removed,
            "failure_records": self.failure_records_removed,
            "completed_jobs": self.completed_jobs_removed,
        }
        if self.dry_run:
            done = {f"would_remove_{name}": n for name, n in counts.items()}
            done["would_drop_index_entries"] = self.index_entries_dropped
        else:
            done = {f"{name}_removed": n for name, n in counts.items()}
            done["index_entries_dropped"] = self.index_entries_dropped
        return {
            "queue": self.queue,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            **done,
            "older_than": format_duration(self.failed_retention_s),
            "cutoff": iso_ms(self.failed_cutoff_ms),
            "duration_ms": self.duration_ms,
        }
