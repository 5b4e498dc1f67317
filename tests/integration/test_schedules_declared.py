"""Schedules declared in code are brought in line when a worker starts: created, changed,
left alone when identical, removed when the code drops them (only those, and only when the
code still has their task); a declaration that cannot be stored stops the start."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.config import Settings
from conveyor.errors import ConfigurationError, ScheduleError, TaskError
from conveyor.registry import JobContext, TaskRegistry
from conveyor.schedules import Schedule
from conveyor.scheduling import Schedules
from conveyor.services.declared import bring_in_line


class Report(BaseModel):
    kind: str = "daily"


def catalogue(*declare: str, data: dict[str, str] | None = None) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(
        "report", schedule="0 9 * * *" if "report" in declare else None, tz="Europe/Paris"
    )
    async def report(payload: Report, ctx: JobContext) -> None: ...

    if "often" in declare:
        registry.schedule("often", "report", data or {}, every=timedelta(seconds=30))
    return registry


async def test_declared_schedules_follow_the_code(redis: Redis, settings: Settings) -> None:
    bull = BullQueue(redis, settings.queue, settings.prefix)
    schedules = Schedules(bull)
    # One made over HTTP (or by Node) with the same task: never touched by declarations.
    await schedules.put(Schedule(id="by-hand", task="report", every_ms=60_000))

    await bring_in_line(redis, catalogue("report", "often"), settings)
    stored = {s.id: s for s in await schedules.all()}
    assert set(stored) == {"report", "often", "by-hand"}
    assert (stored["report"].pattern, stored["report"].tz) == ("0 9 * * *", "Europe/Paris")
    assert stored["often"].every_ms == 30_000
    next_job = stored["often"].next_job_id

    await bring_in_line(redis, catalogue("report", "often"), settings)  # identical: kept
    assert (await schedules.get("often")).next_job_id == next_job

    await bring_in_line(redis, catalogue("report", "often", data={"kind": "weekly"}), settings)
    assert (await schedules.get("often")).data == {"kind": "weekly"}

    await bring_in_line(redis, catalogue("report"), settings)  # "often" left the code
    assert {s.id for s in await schedules.all()} == {"report", "by-hand"}
    assert not await redis.exists(f"{settings.prefix}:{settings.queue}:{next_job}")

    other_app = TaskRegistry()  # a second app on the queue, without the "report" task
    await bring_in_line(redis, other_app, settings)
    assert {s.id for s in await schedules.all()} == {"report", "by-hand"}

    await bring_in_line(redis, catalogue(), settings)  # the same app drops its declaration
    assert {s.id for s in await schedules.all()} == {"by-hand"}


async def test_a_declaration_that_cannot_be_stored_stops_the_start(
    redis: Redis, settings: Settings
) -> None:
    registry = catalogue()
    registry.schedule("bad", "report", {"kind": 7}, every=timedelta(seconds=1))
    with pytest.raises(ConfigurationError, match="declared schedule: invalid payload"):
        await bring_in_line(redis, registry, settings)
    unknown = TaskRegistry()
    unknown.schedule("ghost", every=timedelta(seconds=1))
    with pytest.raises(ConfigurationError, match="unknown task 'ghost'"):
        await bring_in_line(redis, unknown, settings)
    assert await redis.zcard(f"{settings.prefix}:{settings.queue}:repeat") == 0


def test_declarations_are_checked_as_they_are_made() -> None:
    registry = catalogue()
    with pytest.raises(ScheduleError, match="cron pattern"):
        registry.schedule("x", "report", cron="every day")
    with pytest.raises(ScheduleError, match="time zone"):
        registry.schedule("x", "report", cron="0 9 * * *", tz="Paris")
    with pytest.raises(ScheduleError, match="exactly one"):
        registry.schedule("x", "report")
    registry.schedule("x", "report", every=timedelta(minutes=1))
    with pytest.raises(TaskError, match="declared twice"):
        registry.schedule("x", "report", every=timedelta(minutes=2))
