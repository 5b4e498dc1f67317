"""``POST /enqueue`` without the framework's per-request machinery.

The seed's one hot endpoint is answered by a small ASGI layer: it reads the headers and body
from the ASGI messages, runs exactly the same checks and enqueue code as the documented route
(``enqueue_one``), and renders errors with the same problem function. ``FrontDoor`` answers
the requests that the middleware stack would pass on untouched before that stack (the app is
a ``ConveyorApi``); ``EnqueueFastPath``, the innermost middleware, answers the others (CORS,
telemetry) after it. Everything else, and every request when ``api_fast_path`` is off, goes
to FastAPI. The benchmark in docs/benchmarks.md measures both.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.services.api.auth import ApiKeys, bearer_token
from conveyor.services.api.body import check_declared_length, check_media_type, parse, receive_body
from conveyor.services.api.models import MAX_IDEMPOTENCY_KEY_LENGTH, EnqueueRequest
from conveyor.services.api.problems import (
    INVALID_REQUEST,
    UNKNOWN_QUEUE,
    FieldProblem,
    ProblemError,
    problem_for,
    render,
    report,
)
from conveyor.services.api.state import ApiState
from conveyor.services.guard import RequestGuard

ENQUEUE_PATH = "/enqueue"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def status_url(root_path: str, job_id: str, queue: str | None = None) -> str:
    """``/jobs/{id}``, with ``?queue=`` for a queue other than the API's default."""
    url = f"{root_path}/jobs/{quote(job_id, safe='')}"
    return url if queue is None else f"{url}?queue={quote(queue, safe='')}"


def chosen_queue(state: ApiState, name: str | None, path: str = "queue") -> str:
    """The queue a request names (None: the default), if this API serves it; else 422 and
    nothing is written."""
    queue = state.served(name)
    if queue is None:
        served = ", ".join(state.queue_names)
        message = f"not a queue this API serves ({served})"
        problem = FieldProblem(path=path, message=message, type="unknown_queue")
        raise ProblemError(UNKNOWN_QUEUE, f"{path}: {name!r} is {message}", [problem])
    return queue


def job_url(state: ApiState, root_path: str, job_id: str, queue: str) -> str:
    return status_url(root_path, job_id, None if queue == state.settings.queue else queue)


def check_idempotency_key(key: str | None) -> None:
    """The header's bounds, reported as the documented parameter would be (422)."""
    if key is None or 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        return
    kind, message = (
        ("string_too_short", "String should have at least 1 character")
        if not key
        else (
            "string_too_long",
            f"String should have at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
        )
    )
    problem = FieldProblem(path=f"header.{IDEMPOTENCY_HEADER}", message=message, type=kind)
    raise ProblemError(INVALID_REQUEST, f"{problem.path}: {message}", [problem])


async def enqueue_one(
    state: ApiState, raw: bytes, idempotency_key: str | None, root_path: str
) -> tuple[int, dict[str, Any]]:
    """Validate and add the job in ``raw``: (201 or 200, the EnqueueResponse body)."""
    request = parse(EnqueueRequest, raw)
    queue = chosen_queue(state, request.queue)
    enqueuer = state.enqueuer_for(queue)
    job = enqueuer.prepare(request, idempotency_key)
    accepted = await enqueuer.add(job)
    content = {
        "id": accepted.job_id,
        "name": accepted.name,
        "queue": queue,
        "created": accepted.created,
        "deduplicated": accepted.deduplicated,
        "status_url": job_url(state, root_path, accepted.job_id, queue),
    }
    return (201 if accepted.created else 200), content


async def serve_enqueue(state: ApiState, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one ``POST /enqueue``: 201/200 with the job, or its problem."""
    try:
        status, content = await _handle(state, scope, receive)
    except Exception as exc:
        problem = problem_for(exc)
        report(problem, exc, "POST", ENQUEUE_PATH)
        response = render(problem, ENQUEUE_PATH, state.settings.api_retry_after_s)
        await response(scope, receive, send)
        return
    body = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"location", content["status_url"].encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _handle(state: ApiState, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
    content_type = content_length = key = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value.decode("latin-1")
        elif name == b"idempotency-key":
            key = value.decode("latin-1")
    limit = state.settings.api_max_body_bytes
    check_idempotency_key(key)
    check_media_type(content_type)
    check_declared_length(content_length, limit)
    raw = await receive_body(receive, limit)
    return await enqueue_one(state, raw, key, "")


def _is_enqueue(scope: Scope) -> bool:
    return (
        scope["type"] == "http"
        and scope["path"] == ENQUEUE_PATH
        and scope["method"] == "POST"
        and not scope.get("root_path")
    )


class EnqueueFastPath:
    """Answers ``POST /enqueue`` itself; passes every other request on."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_enqueue(scope):
            await self.app(scope, receive, send)
            return
        await serve_enqueue(self.api.state.api, scope, receive, send)


class FrontDoor:
    """Which ``POST /enqueue`` requests may skip the whole middleware stack.

    ``EnqueueFastPath`` sits inside FastAPI's and Starlette's middleware (error handling, the
    body limit, telemetry hooks) and the API's own (the browser guard, API keys, CORS): about
    ten ASGI layers a request passes through before it and its answer passes back. A request
    these layers would pass on untouched is answered here, before them, by the same code:
    one the guard lets through, with a valid key when keys are set, and without an
    ``Origin`` header when CORS is on (CORS adds headers to such answers). Every other
    request (a refusal to render, a CORS answer, telemetry on) takes the whole stack.
    """

    def __init__(self, guard: RequestGuard, keys: ApiKeys | None, cors: bool) -> None:
        self.guard = guard
        self.keys = keys
        self.cors = cors

    def takes(self, scope: Scope) -> bool:
        if not _is_enqueue(scope):
            return False
        headers = scope["headers"]
        if self.guard.check("POST", ENQUEUE_PATH, headers) is not None:
            return False
        if self.keys is None and not self.cors:
            return True
        authorization = None
        for name, value in headers:
            if name == b"origin" and self.cors:
                return False
            if name == b"authorization" and authorization is None:
                authorization = value  # the first one, as ApiKeyMiddleware reads it
        if self.keys is None:
            return True
        token = bearer_token(authorization)
        return token is not None and self.keys.accepts(token)


class ConveyorApi(FastAPI):
    """FastAPI, with ``front_door`` (when set) answering the ``POST /enqueue`` requests it
    takes before the middleware stack."""

    front_door: FrontDoor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self.front_door
        if door is not None and door.takes(scope):
            await serve_enqueue(self.state.api, scope, receive, send)
            return
        await super().__call__(scope, receive, send)
