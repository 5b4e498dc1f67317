"""RFC 9457 problem+json, the one error dialect of both HTTP services (the API and the monitor).

A ``ProblemType`` is a stable ``urn:conveyor:problem:<slug>`` with its status and title; a
``ProblemError`` raised anywhere in a request answers that problem; ``render`` writes it.
The types here are the ones both services answer; each service adds its own beside them
(``services/api/problems.py``, ``services/monitor/problems.py``). docs/api.md lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from conveyor.errors import (
    JobNotFoundError,
    JobStateError,
    RedisUnavailableError,
    ScheduleNotFoundError,
)
from conveyor.redis import is_out_of_memory

PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    """A kind of problem: its URN slug, HTTP status and title."""

    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return f"urn:conveyor:problem:{self.slug}"


NOT_FOUND = ProblemType("not-found", 404, "No such endpoint")
JOB_NOT_FOUND = ProblemType("job-not-found", 404, "Job not found")
QUEUE_NOT_FOUND = ProblemType("queue-not-found", 404, "Queue not served here")
SCHEDULE_NOT_FOUND = ProblemType("schedule-not-found", 404, "Schedule not found")
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", 405, "Method not allowed")
JOB_STATE_CONFLICT = ProblemType("job-state-conflict", 409, "Not possible in the job's state")
#: Answered by the request guard (services/guard.py): CSRF and DNS rebinding.
CROSS_SITE_REQUEST = ProblemType("cross-site-request", 403, "Cross-site request refused")
HOST_NOT_ALLOWED = ProblemType("host-not-allowed", 421, "Host not served here")
#: Answered by the server's protocol (services/serving.py), before the app sees a request.
MALFORMED_REQUEST = ProblemType("malformed-request", 400, "Malformed HTTP request")
REQUEST_TIMEOUT = ProblemType("request-timeout", 408, "Request timeout")
TOO_MANY_CONNECTIONS = ProblemType("too-many-connections", 503, "Too many connections")
INTERNAL = ProblemType("internal-error", 500, "Internal server error")
REDIS_UNAVAILABLE = ProblemType("redis-unavailable", 503, "Redis is unavailable")
REDIS_FULL = ProblemType("redis-full", 507, "Redis is full")

#: The types both services answer.
SHARED_TYPES = (
    NOT_FOUND,
    JOB_NOT_FOUND,
    QUEUE_NOT_FOUND,
    SCHEDULE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    JOB_STATE_CONFLICT,
    CROSS_SITE_REQUEST,
    HOST_NOT_ALLOWED,
    MALFORMED_REQUEST,
    REQUEST_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    INTERNAL,
    REDIS_UNAVAILABLE,
    REDIS_FULL,
)
REDIS_FULL_DETAIL = (
    "Redis is full (maxmemory reached, noeviction) and refuses writes; nothing was written"
)


class FieldProblem(BaseModel):
    """One bad field: its dotted path from the body's root (``data.duration_ms``)."""

    path: str
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, with Conveyor's extension members."""

    type: str = Field(description="urn:conveyor:problem:<slug>; see docs/api.md.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[FieldProblem] | None = Field(default=None, description="Each bad field.")
    known_tasks: list[str] | None = Field(default=None, description="With unknown-task.")
    job_id: str | None = None


@dataclass(eq=False)
class ProblemError(Exception):
    """Raised inside a service to answer a problem directly."""

    kind: ProblemType
    detail: str
    errors: list[FieldProblem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


def shared_problem(exc: BaseException) -> ProblemError | None:
    """The problem for what either service may meet (Redis, a job, a route); None otherwise."""
    if isinstance(exc, ProblemError):
        return exc
    if is_out_of_memory(exc):
        return ProblemError(REDIS_FULL, REDIS_FULL_DETAIL)
    if isinstance(exc, JobNotFoundError):
        return ProblemError(JOB_NOT_FOUND, str(exc), extra={"job_id": exc.job_id})
    if isinstance(exc, JobStateError):
        return ProblemError(JOB_STATE_CONFLICT, str(exc))
    if isinstance(exc, ScheduleNotFoundError):
        return ProblemError(SCHEDULE_NOT_FOUND, str(exc), extra={"schedule_id": exc.schedule_id})
    if isinstance(exc, RedisUnavailableError):
        return ProblemError(REDIS_UNAVAILABLE, str(exc))
    if isinstance(exc, RedisError | TimeoutError | OSError):
        reason = "did not answer in time" if isinstance(exc, TimeoutError) else str(exc)
        return ProblemError(REDIS_UNAVAILABLE, f"Redis is unavailable: {reason or 'timeout'}")
    if isinstance(exc, HTTPException) and exc.status_code in (404, 405):
        kind = NOT_FOUND if exc.status_code == 404 else METHOD_NOT_ALLOWED
        return ProblemError(kind, str(exc.detail), headers=dict(exc.headers or {}))
    return None


def render(problem: ProblemError, instance: str | None, retry_after_s: int | None) -> Response:
    """The problem+json response (a 503 carries Retry-After when ``retry_after_s`` is set)."""
    body: dict[str, Any] = {
        "type": problem.kind.uri,
        "title": problem.kind.title,
        "status": problem.kind.status,
        "detail": problem.detail,
    }
    if instance is not None:
        body["instance"] = instance
    if problem.errors:
        body["errors"] = [p.model_dump() for p in problem.errors]
    body.update(problem.extra)
    headers = dict(problem.headers)
    if problem.kind.status == 503 and retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return Response(
        orjson.dumps(body),
        status_code=problem.kind.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )
