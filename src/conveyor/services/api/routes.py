"""The endpoints. Each is thin: read and check input, call the client, shape the answer.

Error responses are documented by status code here and given their problem+json schema by
``openapi.py``; every one is produced by the app's single exception handler.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from conveyor._bullmq import JobRecord
from conveyor.client import QueueClient
from conveyor.errors import JobNotFoundError
from conveyor.jobs import COUNTED_STATES, JobState
from conveyor.redis import memory_full
from conveyor.services.api.body import (
    check_declared_length,
    check_media_type,
    read_json,
    receive_body,
)
from conveyor.services.api.enqueue import Accepted
from conveyor.services.api.fastpath import chosen_queue, enqueue_one, job_url
from conveyor.services.api.models import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    BulkEnqueueRequest,
    BulkEnqueueResponse,
    CancelRequestBody,
    CancelResponse,
    EnqueueResponse,
    Health,
    JobList,
    JobLogs,
    JobStatus,
    QueueCounts,
    QueueStatus,
    Readiness,
    TaskInfo,
)
from conveyor.services.api.problems import (
    INVALID_REQUEST,
    QUEUE_NOT_FOUND,
    REDIS_FULL,
    FieldProblem,
    ProblemError,
)
from conveyor.services.api.state import Api, ApiState
from conveyor.services.paths import encoded_slash_segment

router = APIRouter()

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        description="Makes a retried request return the job the first one created "
        "(200 instead of 201) instead of adding a second one.",
    ),
]
JobId = Annotated[str, Path(description="The job id.", min_length=1, max_length=1024)]
QueueName = Annotated[str, Path(description="The queue's name (one this API serves).")]
JobQueue = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_QUEUE_NAME_LENGTH,
        description="The job's queue (one of CONVEYOR_QUEUES); default CONVEYOR_QUEUE.",
    ),
]
ListableState = Literal[
    "waiting", "prioritized", "delayed", "active", "paused", "completed", "failed"
]

#: Error statuses of the operations that read a body (schemas filled in by openapi.py).
BODY_ERRORS = (400, 413, 415, 422)
LOCATION = {"Location": {"description": "The job's status URL", "schema": {"type": "string"}}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed JSON",
        404: "Not found",
        409: "Not possible in the job's current state",
        413: "Body over the size limit",
        415: "Body is not JSON",
        422: "Invalid request, unknown task, payload or options that fail validation",
    }
    return {code: {"description": descriptions[code]} for code in codes}


def _accepted(request: Request, state: ApiState, job: Accepted, queue: str) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "name": job.name,
        "queue": queue,
        "created": job.created,
        "deduplicated": job.deduplicated,
        "status_url": job_url(state, request.scope.get("root_path", ""), job.job_id, queue),
    }


@router.post(
    "/enqueue",
    status_code=201,
    response_model=EnqueueResponse,
    summary="Add a job to the queue",
    responses={
        200: {
            "model": EnqueueResponse,
            "description": "The job existed already (same Idempotency-Key or jobId); "
            "nothing was added",
            "headers": LOCATION,
        },
        201: {"description": "Added; Redis has the job", "headers": LOCATION},
        **_errors(*BODY_ERRORS),
    },
    openapi_extra={"x-conveyor-body": "TaskJob"},
)
async def enqueue(request: Request, state: Api, idempotency_key: IdempotencyKey = None) -> Response:
    """Validate the job (task, payload, options) and add it; answers after Redis has it.

    With ``api_fast_path`` on (the default) ``fastpath.py`` answers this path with the same
    code, before FastAPI's routing; this route serves when it is off.
    """
    limit = state.settings.api_max_body_bytes
    check_media_type(request.headers.get("content-type"))
    check_declared_length(request.headers.get("content-length"), limit)
    raw = await receive_body(request.receive, limit)
    status, content = await enqueue_one(
        state, raw, idempotency_key, request.scope.get("root_path", "")
    )
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"Location": content["status_url"]},
    )


@router.post(
    "/enqueue/bulk",
    status_code=201,
    response_model=BulkEnqueueResponse,
    summary="Add many jobs at once, all or nothing",
    responses={**_errors(*BODY_ERRORS)},
    openapi_extra={"x-conveyor-body": "BulkTaskJobs"},
)
async def enqueue_bulk(
    request: Request, state: Api, idempotency_key: IdempotencyKey = None
) -> Response:
    """Validate every job first; then add all of them in one MULTI, or none."""
    body = await read_json(request, BulkEnqueueRequest, state.settings.api_max_body_bytes)
    limit = state.settings.api_bulk_max_jobs
    if len(body.jobs) > limit:
        problem = FieldProblem(path="jobs", message=f"at most {limit} jobs", type="too_long")
        raise ProblemError(INVALID_REQUEST, f"jobs: at most {limit} jobs per request", [problem])
    queue = chosen_queue(state, body.queue)
    for index, job in enumerate(body.jobs):  # one MULTI: one queue (one slot in a cluster)
        if job.queue is not None and chosen_queue(state, job.queue, f"jobs.{index}.queue") != queue:
            path = f"jobs.{index}.queue"
            message = "a bulk goes to one queue: name it once, at the top"
            problem = FieldProblem(path=path, message=message, type="queue_mismatch")
            raise ProblemError(INVALID_REQUEST, f"{path}: {message}", [problem])
    enqueuer = state.enqueuer_for(queue)
    prepared = [
        enqueuer.prepare(job, idempotency_key, index) for index, job in enumerate(body.jobs)
    ]
    accepted = await enqueuer.add_bulk(prepared)
    content = {"jobs": [_accepted(request, state, job, queue) for job in accepted]}
    return Response(orjson.dumps(content), status_code=201, media_type="application/json")


def _status(client: QueueClient, info: JobRecord, job_state: JobState) -> JobStatus:
    return JobStatus.of(info, job_state, client.bull.name, max_attempts=client.max_attempts(info))


def _client(state: ApiState, queue: str | None) -> QueueClient:
    """The client of the queue a URL names (``?queue=`` or the path), 404 if not served."""
    served = state.served(queue)
    if served is None:
        raise ProblemError(
            QUEUE_NOT_FOUND,
            f"this API serves the queues {', '.join(state.queue_names)}, not {queue!r}",
        )
    return state.client_for(served)


def _job_state(request: Request, state: Api) -> ApiState:
    """The app's state, after checking that the path's job id is the one the client sent: an
    encoded ``/`` (``/jobs/x%2Flogs``) names no job (ids never contain ``/``), it must not
    reach job ``x``."""
    sent = encoded_slash_segment(request.scope)
    if sent is not None:
        raise JobNotFoundError(sent, state.settings.queue)
    return state


#: The app's state for a route with a job id in its path (checked as ``_job_state`` says).
JobApi = Annotated[ApiState, Depends(_job_state)]


@router.get("/jobs/{job_id}", summary="A job's state and history", responses=_errors(404))
async def get_job(state: JobApi, job_id: JobId, queue: JobQueue = None) -> JobStatus:
    client = _client(state, queue)
    view = await state.bounded(client.get_job(job_id))
    return _status(client, view.info, view.state)


@router.get("/jobs/{job_id}/logs", summary="Lines the task logged", responses=_errors(404))
async def get_job_logs(state: JobApi, job_id: JobId, queue: JobQueue = None) -> JobLogs:
    client = _client(state, queue)
    view = await state.bounded(client.get_job(job_id))
    return JobLogs(id=view.id, logs=await state.bounded(client.job_logs(job_id)))


@router.post(
    "/jobs/{job_id}/retry",
    summary="Run a failed or completed job again",
    responses=_errors(404, 409),
)
async def retry_job(state: JobApi, job_id: JobId, queue: JobQueue = None) -> JobStatus:
    """The job goes back to waiting with its attempts reset (its failure record is dropped)."""
    client = _client(state, queue)
    await state.bounded(client.retry(job_id))
    view = await state.bounded(client.get_job(job_id))
    return _status(client, view.info, view.state)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Remove a job, or cancel it before it runs",
    responses=_errors(404, 409),
)
async def remove_job(state: JobApi, job_id: JobId, queue: JobQueue = None) -> Response:
    """Waiting and delayed jobs are cancelled, finished ones removed; 409 while one runs."""
    await state.bounded(_client(state, queue).remove(job_id))
    return Response(status_code=204)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=CancelResponse,
    summary="Cancel a job: stop it if it runs, fail it if it waits",
    responses={
        202: {"model": CancelResponse, "description": "It runs: its worker stops it within 1 s"},
        **_errors(404, 409, *BODY_ERRORS),
    },
)
async def cancel_job(
    request: Request, state: JobApi, job_id: JobId, queue: JobQueue = None
) -> Response:
    """The job ends failed, not retried: at once when it waits or is delayed (200), within a
    second by the worker that runs it, on any host (202). A completed job, or one that failed
    for another reason, is a 409. The JSON body (``{"reason"}``) is optional."""
    body = CancelRequestBody()
    if request.headers.get("content-type") or request.headers.get("content-length", "0") != "0":
        body = await read_json(request, CancelRequestBody, state.settings.api_max_body_bytes)
    client = _client(state, queue)
    host = request.client.host if request.client else "unknown"
    result = await state.bounded(client.cancel(job_id, body.reason, by=f"api {host}"))
    now, reason = JobState.UNKNOWN, None
    with contextlib.suppress(JobNotFoundError):  # a worker's removeOnFail may have taken it
        view = await state.bounded(client.get_job(job_id))
        now = view.state
        reason = view.info.failed_reason if now is JobState.FAILED else None
    content = CancelResponse(
        id=job_id,
        outcome=result.outcome.value,
        previous_state=result.state,
        state=now,
        failed_reason=reason,
    )
    return Response(
        content.model_dump_json(),
        status_code=202 if result.stopping else 200,
        media_type="application/json",
    )


async def _queue_status(state: ApiState, client: QueueClient) -> QueueStatus:
    async with state.gate.open():  # one connection: the two calls one after the other
        counts = await client.counts()
        paused = await client.is_paused()
    by_name = {s.value.replace("-", "_"): counts.get(s, 0) for s in COUNTED_STATES}
    return QueueStatus(
        name=client.bull.name,
        paused=paused,
        counts=QueueCounts(**by_name),
        total=sum(by_name.values()),
    )


@router.get("/queues/{name}", summary="Jobs in each state", responses=_errors(404))
async def get_queue(state: Api, name: QueueName) -> QueueStatus:
    return await _queue_status(state, _client(state, name))


@router.get(
    "/queues/{name}/jobs", summary="Jobs in one state, newest first", responses=_errors(404)
)
async def list_jobs(
    state: Api,
    name: QueueName,
    state_name: Annotated[ListableState, Query(alias="state")] = "failed",
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobList:
    client = _client(state, name)
    job_state = JobState(state_name)
    infos = await state.bounded(client.list_jobs(job_state, offset, offset + limit - 1))
    jobs = [_status(client, info, job_state) for info in infos]
    return JobList(state=job_state, offset=offset, limit=limit, jobs=jobs)


@router.post("/queues/{name}/pause", summary="Stop workers taking jobs", responses=_errors(404))
async def pause_queue(state: Api, name: QueueName) -> QueueStatus:
    """Workers finish what they hold and take nothing new; enqueueing still works."""
    client = _client(state, name)
    await state.bounded(client.pause())
    return await _queue_status(state, client)


@router.post("/queues/{name}/resume", summary="Let workers take jobs again", responses=_errors(404))
async def resume_queue(state: Api, name: QueueName) -> QueueStatus:
    client = _client(state, name)
    await state.bounded(client.resume())
    return await _queue_status(state, client)


@router.get("/tasks", summary="The tasks this API accepts, with their payload schemas")
async def list_tasks(state: Api) -> list[TaskInfo]:
    registry = state.registry
    return [
        TaskInfo(
            name=task.name,
            retries=task.retries,
            timeout_s=task.timeout_s,
            rate_limit=None if task.rate_limit is None else str(task.rate_limit),
            concurrency=task.concurrency,
            payload_schema=task.payload_model.model_json_schema(),
        )
        for task in (registry.get(name) for name in registry.names())
    ]


@router.get("/healthz", summary="The process is alive", tags=["health"])
async def healthz() -> Health:
    return Health()


@router.get("/readyz", summary="Redis answers: ready to take jobs", tags=["health"])
async def readyz(state: Api) -> Readiness:
    full = memory_full(await state.bounded(state.client.redis.info("memory")))
    if full:
        raise ProblemError(REDIS_FULL, full)
    return Readiness()
