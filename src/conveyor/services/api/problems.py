"""The API's problems: every answer that is not a success, as RFC 9457 problem+json.

Every failure, whatever raised it (a Conveyor error, a Redis error, a bad body, an unknown
route), goes through ``problem_for`` and leaves as ``application/problem+json`` (rendered by
``services/problems.py``, which the monitor shares) with a stable ``type`` URN, the HTTP
status, a one-line ``detail`` and, for bad input, ``errors`` with the path of each bad field
from the request body's root.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from conveyor.errors import (
    ConveyorError,
    JobOptionsError,
    PayloadValidationError,
    ScheduleError,
    ScheduleNotFoundError,
    UnknownTaskError,
)
from conveyor.services.api.models import UNION_OPTIONS
from conveyor.services.problems import (
    CROSS_SITE_REQUEST,
    HOST_NOT_ALLOWED,
    INTERNAL,
    JOB_NOT_FOUND,
    JOB_STATE_CONFLICT,
    MALFORMED_REQUEST,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    PROBLEM_MEDIA_TYPE,
    QUEUE_NOT_FOUND,
    REDIS_FULL,
    REDIS_UNAVAILABLE,
    REQUEST_TIMEOUT,
    SCHEDULE_NOT_FOUND,
    TOO_MANY_CONNECTIONS,
    FieldProblem,
    Problem,
    ProblemError,
    ProblemType,
    render,
    shared_problem,
)

#: The API's problem vocabulary: its own types and the shared ones it answers too.
__all__ = [
    "ALL_TYPES",
    "CROSS_SITE_REQUEST",
    "HOST_NOT_ALLOWED",
    "INTERNAL",
    "JOB_NOT_FOUND",
    "JOB_STATE_CONFLICT",
    "MALFORMED_REQUEST",
    "METHOD_NOT_ALLOWED",
    "NOT_FOUND",
    "PROBLEM_MEDIA_TYPE",
    "QUEUE_NOT_FOUND",
    "REDIS_FULL",
    "REDIS_UNAVAILABLE",
    "REQUEST_TIMEOUT",
    "TOO_MANY_CONNECTIONS",
    "FieldProblem",
    "OverloadedError",
    "Problem",
    "ProblemError",
    "ProblemType",
    "from_conveyor_error",
    "from_validation_error",
    "make_handler",
    "problem_for",
    "render",
    "report",
]

log = logging.getLogger("conveyor.api")

#: The API's own problem types (the shared ones are in services/problems.py).
MALFORMED_JSON = ProblemType("malformed-json", 400, "Malformed JSON")
UNAUTHORIZED = ProblemType("unauthorized", 401, "Missing or invalid API key")
BODY_TOO_LARGE = ProblemType("body-too-large", 413, "Request body too large")
UNSUPPORTED_MEDIA_TYPE = ProblemType("unsupported-media-type", 415, "Send application/json")
INVALID_REQUEST = ProblemType("invalid-request", 422, "Invalid request")
UNKNOWN_TASK = ProblemType("unknown-task", 422, "Unknown task")
INVALID_PAYLOAD = ProblemType("invalid-payload", 422, "Payload does not match the task's model")
INVALID_OPTIONS = ProblemType("invalid-options", 422, "Invalid job options")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    "idempotency-key-reused", 422, "Idempotency-Key reused for a different job"
)
UNKNOWN_QUEUE = ProblemType("unknown-queue", 422, "Not a queue this API serves")
OVERLOADED = ProblemType("overloaded", 503, "Too many enqueues waiting for Redis")
INVALID_SCHEDULE = ProblemType("invalid-schedule", 422, "Invalid schedule")

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
    UNKNOWN_QUEUE,
    INVALID_PAYLOAD,
    INVALID_OPTIONS,
    IDEMPOTENCY_KEY_REUSED,
    SCHEDULE_NOT_FOUND,
    INVALID_SCHEDULE,
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
    if isinstance(exc, OverloadedError):
        return ProblemError(OVERLOADED, str(exc))
    if isinstance(exc, ScheduleNotFoundError):
        return ProblemError(SCHEDULE_NOT_FOUND, str(exc), extra={"schedule_id": exc.schedule_id})
    if isinstance(exc, ScheduleError):
        problem = FieldProblem(path="", message=str(exc), type="invalid_schedule")
        return ProblemError(INVALID_SCHEDULE, str(exc), [problem])
    shared = shared_problem(exc)  # a job not found or in the wrong state, Redis unavailable
    if shared is not None:
        return shared
    return ProblemError(INTERNAL, f"{type(exc).__name__}: {exc}")


def problem_for(exc: BaseException) -> ProblemError:
    """The problem that answers ``exc``, whatever raised it."""
    if isinstance(exc, StarletteHTTPException):
        return _http_problem(exc)
    if isinstance(exc, ConveyorError):
        return from_conveyor_error(exc)
    if isinstance(exc, RequestValidationError):
        problems = field_problems(list(exc.errors()), drop=("body",))
        return ProblemError(INVALID_REQUEST, _summary(problems), problems)
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    shared = shared_problem(exc)  # a ProblemError raised as such; Redis full or unavailable
    if shared is not None:
        return shared
    return ProblemError(INTERNAL, "the server hit an unexpected error; it has been logged")


def _http_problem(exc: StarletteHTTPException) -> ProblemError:
    kind = _BY_STATUS.get(exc.status_code)
    if kind is None:
        kind = ProblemType(f"http-{exc.status_code}", exc.status_code, str(exc.detail))
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = "no such endpoint; see /openapi.json"
    return ProblemError(kind, detail, headers=dict(exc.headers or {}))


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
