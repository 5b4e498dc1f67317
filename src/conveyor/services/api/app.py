"""``create_app(settings, redis_url)``: the FastAPI app, with nothing global.

The lifespan loads the task catalogue, opens a checked Redis client and builds the enqueuer;
shutting down lets the pipelines on the wire finish and closes the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Scope

from conveyor import __version__
from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.errors import ConveyorError
from conveyor.log import get_logger
from conveyor.redis import redact_url
from conveyor.registry import TaskRegistry, load_registry
from conveyor.services.api.auth import PUBLIC_PATHS, ApiKeyMiddleware, ApiKeys
from conveyor.services.api.enqueue import Enqueuer
from conveyor.services.api.fastpath import ConveyorApi, EnqueueFastPath, FrontDoor
from conveyor.services.api.flow import router as flow_router
from conveyor.services.api.gate import RedisGate
from conveyor.services.api.openapi import build_openapi
from conveyor.services.api.problems import (
    CROSS_SITE_REQUEST,
    HOST_NOT_ALLOWED,
    ProblemError,
    make_handler,
    render,
)
from conveyor.services.api.queues import new_batcher, other_queues
from conveyor.services.api.routes import router
from conveyor.services.api.schedules import router as schedules_router
from conveyor.services.api.state import ApiState
from conveyor.services.guard import GuardMiddleware, Refusal, RequestGuard, Verdict
from conveyor.services.redis_connection import QueueConnections, open_checked

log = get_logger("conveyor.api")

DESCRIPTION = """\
Conveyor's HTTP API: add jobs to the queue, follow them, retry or cancel them.

Jobs are stored in the BullMQ format; job options use BullMQ's own names. Every error is an
RFC 9457 problem (`application/problem+json`) with a `type` URN listed under
`x-problem-types`. A 503 carries `Retry-After`.
"""

#: Errors the one problem handler answers (anything else is a 500, logged with its stack).
HANDLED = (
    ProblemError,
    ConveyorError,
    RequestValidationError,
    ValidationError,
    RedisError,
    TimeoutError,
    OSError,
    StarletteHTTPException,
    Exception,
)


#: The paths whose body is JSON, checked (415) by the routes themselves.
JSON_BODY_PATHS = frozenset({"/enqueue", "/enqueue/bulk"})


def _refusal(retry_after_s: int) -> Callable[[Verdict, Scope], Response]:
    kinds = {Refusal.HOST: HOST_NOT_ALLOWED, Refusal.CROSS_SITE: CROSS_SITE_REQUEST}

    def render_refusal(verdict: Verdict, scope: Scope) -> Response:
        return render(
            ProblemError(kinds[verdict.refusal], verdict.detail), scope["path"], retry_after_s
        )

    return render_refusal


def create_app(
    settings: Settings, redis_url: str, *, registry: TaskRegistry | None = None
) -> FastAPI:
    """The API for ``settings.queue`` on the Redis at ``redis_url``.

    ``registry`` defaults to the catalogue named by ``settings.tasks``, loaded at start-up.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = registry if registry is not None else load_registry(settings.tasks)
        gate = RedisGate(settings.api_redis_connections, settings.api_redis_timeout_s)
        pool_size = settings.api_redis_connections + settings.api_redis_pipelines + 2
        redis = await open_checked(settings, redis_url, max_connections=pool_size)
        client = QueueClient.from_settings(
            settings,
            registry=tasks,
            redis=redis,
            pipelined=False,  # the API batches enqueues itself and bounds its Redis calls
        )
        batcher = new_batcher(settings, redis, client) if settings.api_batch_enqueue else None
        enqueuer = Enqueuer(
            client,
            batcher,
            gate,
            bulk_s_per_job=settings.api_redis_bulk_ms_per_job / 1000,
        )
        conns = QueueConnections(settings, redis_url, redis, max_connections=pool_size)
        others = await other_queues(settings, tasks, conns, enqueuer, gate)
        app.state.api = ApiState(
            settings=settings,
            registry=tasks,
            client=client,
            enqueuer=enqueuer,
            batcher=batcher,
            gate=gate,
            clients=others.clients,
            enqueuers=others.enqueuers,
        )
        log.info(
            "api_ready",
            queue=settings.queue,
            queues=",".join(settings.queue_weights),
            redis=redact_url(redis_url),
            tasks=",".join(tasks.names()),
            auth=bool(settings.api_keys),
            batching=settings.api_batch_enqueue,
        )
        try:
            yield
        finally:
            if batcher is not None:
                await batcher.close()
            await others.close()
            for each in [enqueuer, *others.enqueuers.values()]:
                await each.close()  # their lean bulk connections
            await conns.aclose()
            await redis.aclose()
            log.info(
                "api_stopped",
                pipelines=batcher.batches if batcher else 0,
                batched_enqueues=batcher.operations if batcher else 0,
            )

    app = ConveyorApi(
        title="Conveyor API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        telemetry={
            "tracing": settings.api_telemetry,
            "metrics": settings.api_telemetry,
            "logs": settings.api_telemetry,
        },
    )
    app.include_router(router)
    app.include_router(flow_router)
    app.include_router(schedules_router)
    handler = make_handler(settings.api_retry_after_s)
    for exc_class in HANDLED:
        app.add_exception_handler(exc_class, handler)
    if settings.api_fast_path:
        app.add_middleware(EnqueueFastPath, api=app)
    keys = None
    if settings.api_keys:
        keys = ApiKeys([k.get_secret_value() for k in settings.api_keys])
        app.add_middleware(ApiKeyMiddleware, keys=keys, retry_after_s=settings.api_retry_after_s)
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After"],
        )

    guard = RequestGuard(
        allowed_hosts=settings.http_allowed_hosts,
        bound_host=settings.api_host,
        trusted_origins=settings.api_cors_origins,
        public_paths=PUBLIC_PATHS,
        json_paths=JSON_BODY_PATHS,
        accept_bearer=True,
    )
    app.add_middleware(GuardMiddleware, guard=guard, render=_refusal(settings.api_retry_after_s))
    if settings.api_fast_path and not settings.api_telemetry:
        app.front_door = FrontDoor(guard, keys, cors=bool(settings.api_cors_origins))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            state = getattr(app.state, "api", None)
            tasks = state.registry if isinstance(state, ApiState) else None
            if tasks is None:
                tasks = registry if registry is not None else load_registry(settings.tasks)
            app.openapi_schema = build_openapi(
                app,
                tasks,
                bulk_max=settings.api_bulk_max_jobs,
                auth=bool(settings.api_keys),
                queues=list(settings.queue_weights),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
