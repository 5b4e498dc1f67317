"""The monitor's problems: the API's dialect (``services/problems.py``) plus its own few types.

Every answer that is not a success is ``application/problem+json`` with a
``urn:conveyor:problem:<slug>`` type. Bad query or body parameters stay a 400 here (the
dashboard's own calls), where the API's job bodies are a 422.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from conveyor.errors import ConveyorError
from conveyor.log import get_logger
from conveyor.services.guard import Refusal, Verdict
from conveyor.services.monitor.inspector import UnknownQueueError
from conveyor.services.monitor.jobs import InvalidRequestError
from conveyor.services.problems import (
    CROSS_SITE_REQUEST,
    HOST_NOT_ALLOWED,
    INTERNAL,
    QUEUE_NOT_FOUND,
    SHARED_TYPES,
    FieldProblem,
    ProblemError,
    ProblemType,
    render,
    shared_problem,
)

log = get_logger("conveyor.monitor")

CREDENTIALS_REQUIRED = ProblemType("credentials-required", 401, "Valid credentials are required")
ACTION_FORBIDDEN = ProblemType("action-forbidden", 403, "Not allowed to act")
INVALID_PARAMETERS = ProblemType("invalid-parameters", 400, "Invalid parameters")

#: Every type the monitor answers (its OpenAPI document lists them).
MONITOR_TYPES = (CREDENTIALS_REQUIRED, ACTION_FORBIDDEN, INVALID_PARAMETERS, *SHARED_TYPES)
#: What the one handler answers: Starlette looks handlers up by class, and ``Exception`` alone
#: would only catch what nothing else (FastAPI's own handlers included) answers first.
HANDLED = (
    ProblemError,
    ConveyorError,
    RequestValidationError,
    RedisError,
    TimeoutError,
    OSError,
    HTTPException,
    Exception,
)
_REFUSALS = {Refusal.HOST: HOST_NOT_ALLOWED, Refusal.CROSS_SITE: CROSS_SITE_REQUEST}


def problem_for(exc: BaseException) -> ProblemError:
    """The problem that answers ``exc``, whatever raised it."""
    if isinstance(exc, UnknownQueueError):
        return ProblemError(QUEUE_NOT_FOUND, str(exc))
    if isinstance(exc, InvalidRequestError):
        return ProblemError(INVALID_PARAMETERS, str(exc))
    if isinstance(exc, RequestValidationError):
        problems = [
            FieldProblem(path=".".join(str(p) for p in e["loc"]), message=e["msg"], type=e["type"])
            for e in exc.errors()
        ]
        detail = "; ".join(f"{p.path}: {p.message}" for p in problems)
        return ProblemError(INVALID_PARAMETERS, detail, problems)
    shared = shared_problem(exc)
    if shared is not None:
        return shared
    if isinstance(exc, ConveyorError):
        return ProblemError(INVALID_PARAMETERS, str(exc))
    if isinstance(exc, HTTPException) and exc.status_code == 401:  # HTTPBasic: malformed
        detail = "valid credentials are required"
        return ProblemError(CREDENTIALS_REQUIRED, detail, headers=dict(exc.headers or {}))
    if isinstance(exc, HTTPException):
        kind = ProblemType(f"http-{exc.status_code}", exc.status_code, str(exc.detail))
        return ProblemError(kind, str(exc.detail), headers=dict(exc.headers or {}))
    return ProblemError(INTERNAL, "the monitor hit an unexpected error; it has been logged")


#: What a 503 (Redis away, a Sentinel failover under way) tells the dashboard to wait (s).
RETRY_AFTER_S = 1


async def handle(request: Request, exc: Exception) -> Response:
    """The monitor's one exception handler."""
    problem = problem_for(exc)
    fields = {
        "path": request.url.path,
        "status": problem.kind.status,
        "problem": problem.kind.slug,
        "error": f"{type(exc).__name__}: {exc}",
    }
    if problem.kind.status == 500:
        log.exception("monitor_request_failed", **fields)  # a bug: with its stack
    elif problem.kind.status > 500:
        log.warning("monitor_request_failed", **fields)
    return render(problem, request.url.path, RETRY_AFTER_S)


def render_refusal(verdict: Verdict, scope: Scope) -> Response:
    """The request guard's refusals (a foreign Host, a cross-site request), as problems."""
    return render(ProblemError(_REFUSALS[verdict.refusal], verdict.detail), scope["path"], None)
