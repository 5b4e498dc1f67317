"""``/schedules``: create or change (``PUT``), read, remove and run now a schedule of the
queue. A schedule is a BullMQ job scheduler, so Node's ``getJobSchedulers`` lists it; its task
and payload are checked like an enqueue's, and a rejected request writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from pydantic import AwareDatetime, BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from conveyor._bullmq import SchedulerRecord
from conveyor.clock import now_ms
from conveyor.schedules import MAX_EVERY_MS, MAX_LIMIT, Schedule, to_ms
from conveyor.scheduling import Schedules
from conveyor.services.api.body import read_json
from conveyor.services.api.models import MAX_TASK_NAME_LENGTH, _Strict
from conveyor.services.api.state import Api, ApiState

router = APIRouter(tags=["schedules"])

ScheduleId = Annotated[str, Path(description="The schedule's id.", min_length=1, max_length=128)]


class ScheduleRequest(_Strict):
    """A schedule: its task and payload, and exactly one of ``every_ms`` and ``cron``."""

    name: str = Field(min_length=1, max_length=MAX_TASK_NAME_LENGTH, description="The task.")
    data: dict[str, Any] | None = Field(default=None, description="The payload. Default {}.")
    every_ms: int | None = Field(default=None, ge=1, le=MAX_EVERY_MS, description="Interval.")
    cron: str | None = Field(
        default=None,
        max_length=256,
        description="A cron pattern: 5 fields, or 6 with seconds first (as BullMQ's).",
    )
    tz: str | None = Field(default=None, max_length=64, description="IANA zone of the cron.")
    start: AwareDatetime | int | None = Field(
        default=None, description="No run before (ISO 8601 with a zone, or epoch ms)."
    )
    end: AwareDatetime | int | None = Field(
        default=None, description="No run after (ISO 8601 with a zone, or epoch ms)."
    )
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT, description="Runs in all.")


class LastRun(BaseModel):
    slot_at: datetime | None
    job_id: str
    taken_at: datetime


class ScheduleView(BaseModel):
    id: str
    name: str
    data: Any
    every_ms: int | None
    cron: str | None
    tz: str | None
    start: datetime | None
    end: datetime | None
    limit: int | None
    runs: int = Field(description="Runs created so far (BullMQ's iteration count).")
    next_run_at: datetime | None
    next_job_id: str | None
    last_run: LastRun | None = Field(description="The last run a Conveyor worker took.")
    lag_ms: int = Field(description="How late the due run is (0 when on time).")


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]


def _at(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def view_of(record: SchedulerRecord, now: int) -> ScheduleView:
    last = record.last_run or {}
    last_run = None
    if last.get("job_id") and isinstance(last.get("taken_ms"), int):
        last_run = LastRun(
            slot_at=_at(last.get("slot_ms")),
            job_id=str(last["job_id"]),
            taken_at=_at(last["taken_ms"]) or datetime.now(UTC),
        )
    return ScheduleView(
        id=record.id,
        name=record.name,
        data=record.data,
        every_ms=record.every_ms,
        cron=record.pattern,
        tz=record.tz,
        start=_at(record.start_ms),
        end=_at(record.end_ms),
        limit=record.limit,
        runs=record.iterations,
        next_run_at=_at(record.next_ms),
        next_job_id=record.next_job_id,
        last_run=last_run,
        lag_ms=record.lag_ms(now),
    )


def _schedules(state: ApiState) -> Schedules:
    return Schedules(state.client.bull, state.registry)


def _schedule(schedule_id: str, body: ScheduleRequest) -> Schedule:
    """The request as a Schedule (ScheduleError, a 422, when it cannot be one)."""
    return Schedule(
        id=schedule_id,
        task=body.name,
        data=body.data if body.data is not None else {},
        every_ms=body.every_ms,
        cron=body.cron,
        tz=body.tz,
        start_ms=to_ms(body.start, "start"),
        end_ms=to_ms(body.end, "end"),
        limit=body.limit,
    )


def _json(content: BaseModel, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content.model_dump(mode="json")),
        status_code=status,
        media_type="application/json",
    )


@router.put(
    "/schedules/{schedule_id}",
    response_model=ScheduleView,
    summary="Create or change a schedule",
    responses={
        200: {"description": "Changed (or already so)"},
        201: {"model": ScheduleView, "description": "Created"},
        400: {"description": "Malformed JSON"},
        404: {"description": "Not found"},
        413: {"description": "Body over the size limit"},
        415: {"description": "Body is not JSON"},
        422: {"description": "Invalid schedule, unknown task or payload"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ScheduleRequest.model_json_schema()}},
        }
    },
)
async def put_schedule(request: Request, state: Api, schedule_id: ScheduleId) -> Response:
    """Its next run is replaced when it changes; an identical request changes nothing."""
    body = await read_json(request, ScheduleRequest, state.settings.api_max_body_bytes)
    schedule = _schedule(schedule_id, body)
    created, record = await state.bounded(_schedules(state).put(schedule))
    return _json(view_of(record, now_ms()), 201 if created else 200)


@router.get("/schedules", summary="Every schedule of the queue, soonest first")
async def list_schedules(state: Api) -> ScheduleList:
    records = await state.bounded(_schedules(state).all())
    now = now_ms()
    return ScheduleList(schedules=[view_of(r, now) for r in records])


@router.get("/schedules/{schedule_id}", summary="One schedule", responses={404: {}})
async def get_schedule(state: Api, schedule_id: ScheduleId) -> ScheduleView:
    return view_of(await state.bounded(_schedules(state).get(schedule_id)), now_ms())


@router.delete(
    "/schedules/{schedule_id}",
    status_code=204,
    summary="Remove a schedule (and its next run, unless it already runs)",
    responses={404: {}},
)
async def delete_schedule(state: Api, schedule_id: ScheduleId) -> Response:
    await state.bounded(_schedules(state).remove(schedule_id))
    return Response(status_code=204)


class RunNow(BaseModel):
    id: str
    status_url: str


@router.post(
    "/schedules/{schedule_id}/run",
    status_code=201,
    summary="Run the schedule's task now, once (its slots stay as they are)",
    responses={404: {}},
)
async def run_schedule(request: Request, state: Api, schedule_id: ScheduleId) -> RunNow:
    job_id = await state.bounded(_schedules(state).run_now(schedule_id))
    return RunNow(id=job_id, status_url=f"{request.scope.get('root_path', '')}/jobs/{job_id}")
