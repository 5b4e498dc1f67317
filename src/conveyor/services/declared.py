"""A worker's start brings the schedules declared in code (``registry.schedule``,
``@registry.task(schedule=...)``) in line with Redis (``conveyor.scheduling``)."""

from __future__ import annotations

from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.config import Settings
from conveyor.errors import ConfigurationError, ScheduleError, TaskError
from conveyor.keys import declared_schedules
from conveyor.log import get_logger
from conveyor.registry import TaskRegistry
from conveyor.scheduling import Schedules

log = get_logger("conveyor.schedules")


async def bring_in_line(redis: Redis, registry: TaskRegistry, settings: Settings) -> None:
    """Create or change the declared schedules, remove the ones no longer declared (see
    ``Schedules.reconcile``). A declaration that cannot be stored (its task unknown, its
    payload invalid) stops the start with a ConfigurationError, before anything is written."""
    declared = registry.schedules()
    if not declared and not await redis.exists(declared_schedules(settings.prefix, settings.queue)):
        return
    schedules = Schedules(BullQueue(redis, settings.queue, settings.prefix), registry)
    try:
        done = await schedules.reconcile(declared)
    except (ScheduleError, TaskError) as exc:
        raise ConfigurationError(f"declared schedule: {exc}") from exc
    if done.created or done.changed or done.removed:
        log.info(
            "schedules_reconciled",
            created=",".join(done.created),
            changed=",".join(done.changed),
            removed=",".join(done.removed),
            unchanged=len(done.unchanged),
        )
