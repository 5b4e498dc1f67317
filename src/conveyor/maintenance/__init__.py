"""Maintenance of the queue's data: the cleanup of old finished jobs.

``retention`` decides what goes and when (pure functions), ``remover`` removes it from Redis
in bounded batches, ``schedule`` runs it once per interval across replicas.
"""

from conveyor.keys import CleanupKeys
from conveyor.maintenance.remover import Cleaner
from conveyor.maintenance.retention import (
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
