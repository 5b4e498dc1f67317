"""What an operator may do from the dashboard (the rw role and the action header)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from conveyor.services.monitor.auth import Actor
from conveyor.services.monitor.models import (
    FailedRetried,
    JobCancelled,
    JobRemoved,
    JobRetried,
    Paused,
    Removed,
    Retried,
)
from conveyor.services.monitor.routes.params import JobId
from conveyor.services.monitor.state import Monitor

router = APIRouter(prefix="/api/queues/{queue}", tags=["act"])

#: A failure group's pattern, as ``/errors`` lists it.
Pattern = Annotated[str, Body(embed=True, min_length=1)]


@router.post("/jobs/{job_id}/retry", response_model=JobRetried)
async def retry(who: Actor, monitor: Monitor, queue: str, job_id: JobId) -> dict[str, Any]:
    return await monitor.actions.retry(queue, job_id, who.user)


@router.delete("/jobs/{job_id}", response_model=JobRemoved)
async def remove(who: Actor, monitor: Monitor, queue: str, job_id: JobId) -> dict[str, Any]:
    return await monitor.actions.remove(queue, job_id, who.user)


@router.post("/jobs/{job_id}/cancel", response_model=JobCancelled)
async def cancel(who: Actor, monitor: Monitor, queue: str, job_id: JobId) -> dict[str, Any]:
    return await monitor.actions.cancel(queue, job_id, who.user)


@router.post("/retry-failed", response_model=FailedRetried)
async def retry_failed(who: Actor, monitor: Monitor, queue: str) -> dict[str, Any]:
    return await monitor.actions.retry_failed(queue, who.user)


@router.post("/pause", response_model=Paused)
async def pause(who: Actor, monitor: Monitor, queue: str) -> dict[str, Any]:
    return await monitor.actions.pause(queue, who.user)


@router.post("/resume", response_model=Paused)
async def resume(who: Actor, monitor: Monitor, queue: str) -> dict[str, Any]:
    return await monitor.actions.resume(queue, who.user)


@router.post("/errors/retry", response_model=Retried)
async def retry_group(who: Actor, monitor: Monitor, queue: str, pattern: Pattern) -> dict[str, Any]:
    return await monitor.actions.retry_group(queue, pattern, who.user)


@router.post("/errors/remove", response_model=Removed)
async def remove_group(
    who: Actor, monitor: Monitor, queue: str, pattern: Pattern
) -> dict[str, Any]:
    return await monitor.actions.remove_group(queue, pattern, who.user)
