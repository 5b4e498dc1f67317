"""One error format for every answer that is not a success: RFC 9457 problem+json.

Every failure, whatever raised it (a Conveyor error, a Redis error, a bad body, an unknown
route), goes through ``problem_for`` and leaves as ``application/problem+json`` with a stable
``type`` URN, the HTTP status, a one-line ``detail`` and, for bad input, ``errors`` with the
path of each bad field from the request body's root.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from conveyor.errors import (
    ConveyorError,
    JobNotFoundError,
    JobOptionsError,
    JobStateError,
    PayloadValidationError,
    RedisUnavailableError,
    UnknownTaskError,
)
from conveyor.redis import is_out_of_memory
from conveyor.services.api.models import UNION_OPTIONS

log = logging.getLogger("conveyor.api")

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


MALFORMED_JSON = ProblemType("malformed-json", 400, "Malformed JSON")
UNAUTHORIZED = ProblemType("unauthorized", 401, "Missing or invalid API key")
NOT_FOUND = ProblemType("not-found", 404, "No such endpoint")
JOB_NOT_FOUND = ProblemType("job-not-found", 404, "Job not found")
QUEUE_NOT_FOUND = ProblemType("queue-not-found", 404, "Queue not served here")
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", 405, "Method not allowed")
JOB_STATE_CONFLICT = ProblemType("job-state-conflict", 409, "Not possible in the job's state")
BODY_TOO_LARGE = ProblemType("body-too-large", 413, "Request body too large")
UNSUPPORTED_MEDIA_TYPE = ProblemType("unsupported-media-type", 415, "Send application/json")
INVALID_REQUEST = ProblemType("invalid-request", 422, "Invalid request")
UNKNOWN_TASK = ProblemType("unknown-task", 422, "Unknown task")
INVALID_PAYLOAD = ProblemType("invalid-payload", 422, "Payload does not match the task's model")
INVALID_OPTIONS = ProblemType("invalid-options", 422, "Invalid job options")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    "idempotency-key-reused", 422, "Idempotency-Key reused for a different job"
)
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
OVERLOADED = ProblemType("overloaded", 503, "Too many enqueues waiting for Redis")

ALL_TYPES = (
    MALFORMED_JSON,
    UNAUTHORIZED,
    NOT_FOUND,
    JOB_NOT_FOUND,
    QUEUE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
    JOB_STATE_CONFLICT,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_REQUEST,
    UNKNOWN_TASK,
    INVALID_PAYLOAD,
    INVALID_OPTIONS,
    IDEMPOTENCY_KEY_REUSED,
    INTERNAL,
    REDIS_UNAVAILABLE,
    OVERLOADED,
    REDIS_FULL,
    MALFORMED_REQUEST,
    REQUEST_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    CROSS_SITE_REQUEST,
    HOST_NOT_ALLOWED,
)
_BY_STATUS = {
    400: MALFORMED_JSON,
    401: UNAUTHORIZED,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: BODY_TOO_LARGE,
    415: UNSUPPORTED_MEDIA_TYPE,
}


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
    """Raised inside the API to answer a problem directly."""

    kind: ProblemType
    detail: str
    errors: list[FieldProblem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail


class OverloadedError(ConveyorError):
    """Raised when more enqueues wait for Redis than the API lets wait (backpressure)."""


def _path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def _without_form_tags(loc: list[int | str]) -> list[int | str]:
    """Drop the form tag pydantic adds after an option that takes several forms."""
    for i in range(1, len(loc) - 1):
        if loc[i - 1] == "options" and loc[i] in UNION_OPTIONS:
            return loc[: i + 1] + loc[i + 2 :]
    return loc


def field_problems(
    errors: list[Any], prefix: str = "", *, drop: tuple[str, ...] = ()
) -> list[FieldProblem]:
    """Pydantic's error list as FieldProblems; ``drop`` strips a leading location part."""
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in drop:
            loc = loc[1:]
        loc = _without_form_tags(loc)
        path = prefix + _path(loc)
        out.append(FieldProblem(path=path.rstrip("."), message=err["msg"], type=err["type"]))
    return out


def from_validation_error(exc: ValidationError, prefix: str = "") -> ProblemError:
    """A body that failed the request model: 400 if it is not JSON at all, else 422."""
    errors = exc.errors(include_url=False, include_input=False)
    broken = next((e for e in errors if e["type"] == "json_invalid"), None)
    if broken is not None:
        return ProblemError(MALFORMED_JSON, f"the body is not valid JSON: {broken['msg']}")
    problems = field_problems(list(errors), prefix)
    return ProblemError(INVALID_REQUEST, _summary(problems), problems)


def _summary(problems: list[FieldProblem]) -> str:
    shown = "; ".join(f"{p.path or '<body>'}: {p.message}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return shown + more


def from_conveyor_error(exc: ConveyorError, prefix: str = "") -> ProblemError:
    """Translate a Conveyor error about a job request; ``prefix`` locates it (``jobs.3.``)."""
    where = f"{prefix.rstrip('.')}: " if prefix else ""
    if isinstance(exc, UnknownTaskError):
        problem = FieldProblem(path=prefix + "name", message=str(exc), type="unknown_task")
        return ProblemError(UNKNOWN_TASK, where + str(exc), [problem], {"known_tasks": exc.known})
    if isinstance(exc, PayloadValidationError):
        problems = [
            FieldProblem(
                path=(prefix + "data." + e.path).rstrip("."), message=e.message, type=e.type
            )
            for e in exc.errors
        ]
        return ProblemError(
            INVALID_PAYLOAD,
            f"invalid payload for task {exc.task!r}: " + _summary(problems),
            problems,
        )
    if isinstance(exc, JobOptionsError):
        problem = FieldProblem(path=prefix + "options", message=str(exc), type="invalid_option")
        return ProblemError(INVALID_OPTIONS, where + str(exc), [problem])
    if isinstance(exc, JobNotFoundError):
        return ProblemError(JOB_NOT_FOUND, str(exc), extra={"job_id": exc.job_id})
    if isinstance(exc, JobStateError):
        return ProblemError(JOB_STATE_CONFLICT, str(exc))
    if isinstance(exc, RedisUnavailableError | OverloadedError):
        kind = OVERLOADED if isinstance(exc, OverloadedError) else REDIS_UNAVAILABLE
        return ProblemError(kind, str(exc))
    return ProblemError(INTERNAL, f"{type(exc).__name__}: {exc}")


def problem_for(exc: BaseException) -> ProblemError:
    """The problem that answers ``exc``, whatever raised it."""
    if isinstance(exc, ProblemError):
        return exc
    if is_out_of_memory(exc):
        return ProblemError(
            REDIS_FULL,
            "Redis is full (maxmemory reached, noeviction) and refuses writes; nothing was written",
        )
    if isinstance(exc, ConveyorError):
        return from_conveyor_error(exc)
    if isinstance(exc, RequestValidationError):
        problems = field_problems(list(exc.errors()), drop=("body",))
        return ProblemError(INVALID_REQUEST, _summary(problems), problems)
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, RedisError | TimeoutError | OSError):
        reason = "did not answer in time" if isinstance(exc, TimeoutError) else str(exc)
        return ProblemError(REDIS_UNAVAILABLE, f"Redis is unavailable: {reason or 'timeout'}")
    if isinstance(exc, StarletteHTTPException):
        kind = _BY_STATUS.get(exc.status_code)
        if kind is None:
            kind = ProblemType(f"http-{exc.status_code}", exc.status_code, str(exc.detail))
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = "no such endpoint; see /openapi.json"
        return ProblemError(kind, detail, headers=dict(exc.headers or {}))
    return ProblemError(INTERNAL, "the server hit an unexpected error; it has been logged")


def render(problem: ProblemError, instance: str | None, retry_after_s: int) -> Response:
    """The problem+json response (503s carry Retry-After)."""
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
    if problem.kind.status == 503:
        headers["Retry-After"] = str(retry_after_s)
    return Response(
        orjson.dumps(body),
        status_code=problem.kind.status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def report(problem: ProblemError, exc: BaseException, method: str, path: str) -> None:
    """Log server-side failures: 5xx only (a client's mistake is not the server's event)."""
    status = problem.kind.status
    if status < 500:
        return
    log.log(
        logging.ERROR if status == 500 else logging.WARNING,
        "api_request_failed",
        exc_info=exc if status == 500 else None,
        extra={
            "fields": {
                "method": method,
                "path": path,
                "status": status,
                "problem": problem.kind.slug,
                "error": f"{type(exc).__name__}: {exc}",
            }
        },
    )


def make_handler(retry_after_s: int) -> Any:
    """The app's one exception handler."""

    async def handle(request: Request, exc: Exception) -> Response:
        problem = problem_for(exc)
        report(problem, exc, request.method, request.url.path)
        return render(problem, request.url.path, retry_after_s)

    return handle
