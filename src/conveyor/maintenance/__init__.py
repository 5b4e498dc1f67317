"""Maintenance of the queue's data: the cleanup of old finished jobs and its schedule."""

from conveyor.maintenance.cleaner import Cleaner
from conveyor.maintenance.cleanup import (
    CleanupReport,
    FailureEntry,
    RetentionPolicy,
    format_duration,
    is_due,
    parse_duration,
    select_expired,
)
from conveyor.maintenance.schedule import (
    CleanupBusyError,
    CleanupKeys,
    CleanupScheduler,
    read_last_run_ms,
    read_runs,
)

__all__ = [
    "Cleaner",
    "CleanupBusyError",
    "CleanupKeys",
    "CleanupReport",
    "CleanupScheduler",
    "FailureEntry",
    "RetentionPolicy",
    "format_duration",
    "is_due",
    "parse_duration",
    "read_last_run_ms",
    "read_runs",
    "select_expired",
]
