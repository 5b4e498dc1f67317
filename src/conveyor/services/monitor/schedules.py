"""The monitor's schedules (BullMQ job schedulers, Node's too): the Schedules panel's list
(next and last run, lag), its "run now" and "remove" actions, and the schedules' lines in
/metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from conveyor._bullmq import SchedulerRecord
from conveyor.clock import now_ms
from conveyor.log import get_logger
from conveyor.observability.schedule_metrics import ScheduleMetrics
from conveyor.scheduling import Schedules
from conveyor.services.monitor.auth import Actor, Viewer
from conveyor.services.monitor.state import Monitor, MonitorState

log = get_logger("conveyor.monitor")

router = APIRouter(prefix="/api/queues/{queue}/schedules", tags=["schedules"])


class ScheduleRow(BaseModel):
    id: str
    task: str
    every_ms: int | None
    cron: str | None
    tz: str | None
    runs: int
    limit: int | None
    next_run_ms: int | None
    next_job_id: str | None
    last_run_ms: int | None = Field(description="When a Conveyor worker took its last run.")
    last_job_id: str | None
    lag_ms: int


class ScheduleRows(BaseModel):
    schedules: list[ScheduleRow]


class ScheduleRan(BaseModel):
    schedule: str
    job_id: str


class ScheduleRemoved(BaseModel):
    schedule: str
    removed: bool


def row(record: SchedulerRecord, now: int) -> ScheduleRow:
    last = record.last_run or {}
    taken = last.get("taken_ms")
    return ScheduleRow(
        id=record.id,
        task=record.name,
        every_ms=record.every_ms,
        cron=record.pattern,
        tz=record.tz,
        runs=record.iterations,
        limit=record.limit,
        next_run_ms=record.next_ms,
        next_job_id=record.next_job_id,
        last_run_ms=taken if isinstance(taken, int) else None,
        last_job_id=str(last["job_id"]) if last.get("job_id") else None,
        lag_ms=record.lag_ms(now),
    )


async def _schedules(monitor: MonitorState, queue: str) -> Schedules:
    client = await monitor.inspector.client(queue)  # 404 for an unknown queue
    return Schedules(client.bull)


@router.get("")
async def list_schedules(_: Viewer, monitor: Monitor, queue: str) -> ScheduleRows:
    records = await (await _schedules(monitor, queue)).all()
    now = now_ms()
    return ScheduleRows(schedules=[row(r, now) for r in records])


@router.post("/{schedule_id}/run")
async def run_now(who: Actor, monitor: Monitor, queue: str, schedule_id: str) -> ScheduleRan:
    job_id = await (await _schedules(monitor, queue)).run_now(schedule_id)
    log.info("monitor_action", action="run_schedule", queue=queue, user=who.user or "-",
             schedule=schedule_id, job_id=job_id)  # fmt: skip
    return ScheduleRan(schedule=schedule_id, job_id=job_id)


@router.delete("/{schedule_id}")
async def remove(who: Actor, monitor: Monitor, queue: str, schedule_id: str) -> ScheduleRemoved:
    await (await _schedules(monitor, queue)).remove(schedule_id)
    log.info("monitor_action", action="remove_schedule", queue=queue, user=who.user or "-",
             schedule=schedule_id)  # fmt: skip
    return ScheduleRemoved(schedule=schedule_id, removed=True)


async def schedule_metrics(monitor: MonitorState, queues: list[str]) -> list[ScheduleMetrics]:
    """Each schedule of ``queues`` as /metrics shows it."""
    out: list[ScheduleMetrics] = []
    now = now_ms()
    for queue in queues:
        records: list[Any] = await (await _schedules(monitor, queue)).all()
        for r in records:
            out.append(
                ScheduleMetrics(
                    queue=queue,
                    schedule=r.id,
                    task=r.name,
                    lag_s=r.lag_ms(now) / 1000,
                    next_run_s=r.next_ms / 1000 if r.next_ms is not None else None,
                )
            )
    return out
