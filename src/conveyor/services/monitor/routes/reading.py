"""What the dashboard reads: counts (also live), workers, job lists and details, errors,
history."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from conveyor.observability.stats import read_history
from conveyor.services.monitor.auth import Viewer
from conveyor.services.monitor.jobs import error_groups, job_detail, list_jobs, parse_state
from conveyor.services.monitor.models import (
    ErrorGroups,
    History,
    JobDetail,
    JobPage,
    Me,
    Overview,
    Workers,
)
from conveyor.services.monitor.routes.params import JobId
from conveyor.services.monitor.sse import event_stream
from conveyor.services.monitor.state import Monitor

#: Points a history answer holds at most (longer windows are summed into wider steps).
MAX_HISTORY_POINTS = 300

router = APIRouter(prefix="/api", tags=["read"])


@router.get("/me")
async def me(principal: Viewer, monitor: Monitor) -> Me:
    settings = monitor.settings
    return Me(
        user=principal.user,
        role=principal.role,
        can_act=principal.can_act,
        auth=monitor.access.enabled,
        refresh_s=settings.monitor_refresh_s,
        history_minutes=settings.stats_history_minutes,
    )


@router.get("/overview", response_model=Overview)
async def overview(_: Viewer, monitor: Monitor) -> dict[str, Any]:
    """Every queue's counts (what ``/api/events`` pushes when they change)."""
    return await monitor.broadcaster.source()


@router.get("/events", response_class=EventSourceResponse)
async def events(_: Viewer, monitor: Monitor) -> AsyncIterator[ServerSentEvent]:
    """``overview`` events (an Overview) whenever the counts change; ``trouble`` events when
    Redis does not answer."""
    async for event in event_stream(monitor.broadcaster):
        yield event


@router.get("/workers", response_model=Workers)
async def workers(_: Viewer, monitor: Monitor, queue: str | None = None) -> dict[str, Any]:
    names = None
    if queue is not None:
        await monitor.inspector.client(queue)  # 404 for an unknown queue
        names = [queue]
    found = await monitor.inspector.workers(names)
    return {"workers": [asdict(w) for w in found]}


@router.get("/queues/{queue}/jobs", response_model=JobPage)
async def jobs(
    _: Viewer,
    monitor: Monitor,
    queue: str,
    state: str = "waiting",
    page: Annotated[int, Query(ge=0)] = 0,
    size: Annotated[int, Query(ge=1, le=200)] = 25,
    q: Annotated[str, Query(max_length=256)] = "",
) -> dict[str, Any]:
    client = await monitor.inspector.client(queue)
    result = await list_jobs(client, parse_state(state), page=page, size=size, search=q)
    return result.to_json()


@router.get("/queues/{queue}/jobs/{job_id}", response_model=JobDetail)
async def job(_: Viewer, monitor: Monitor, queue: str, job_id: JobId) -> dict[str, Any]:
    return await job_detail(await monitor.inspector.client(queue), job_id)


@router.get("/queues/{queue}/errors", response_model=ErrorGroups)
async def errors(_: Viewer, monitor: Monitor, queue: str) -> dict[str, Any]:
    client = await monitor.inspector.client(queue)
    return (await error_groups(client, monitor.settings.monitor_error_sample)).to_json()


@router.get("/queues/{queue}/history", response_model=History)
async def history(
    _: Viewer,
    monitor: Monitor,
    queue: str,
    minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 15,
) -> dict[str, Any]:
    settings = monitor.settings
    client = await monitor.inspector.client(queue)  # its queue's Redis (node, in a cluster)
    minutes = min(minutes, settings.stats_history_minutes)
    step = max(1, math.ceil(minutes * 60 / MAX_HISTORY_POINTS))
    points = await read_history(client.redis, settings.prefix, queue, minutes=minutes, step_s=step)
    return {"minutes": minutes, "step_s": step, "points": [asdict(p) for p in points]}
