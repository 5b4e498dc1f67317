"""The monitor's web app: the dashboard, its JSON API, the live event stream and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from conveyor.config import Settings
from conveyor.errors import ConveyorError, JobNotFoundError, JobStateError
from conveyor.observability.metrics import METRICS_CONTENT_TYPE, render_metrics
from conveyor.observability.stats import read_history
from conveyor.redis import is_out_of_memory, memory_full
from conveyor.services.guard import GuardMiddleware, Refusal, RequestGuard, Verdict
from conveyor.services.monitor.actions import Actions
from conveyor.services.monitor.auth import ACTION_HEADER, REALM, Access, Principal
from conveyor.services.monitor.inspector import Inspector, UnknownQueueError
from conveyor.services.monitor.jobs import (
    InvalidRequestError,
    error_groups,
    job_detail,
    list_jobs,
    parse_state,
)
from conveyor.services.monitor.sse import Broadcaster, event_stream
from conveyor.services.paths import encoded_slash_segment
from conveyor.services.redis_connection import open_checked

log = logging.getLogger("conveyor.monitor")

STATIC_DIR = Path(str(files("conveyor.services.monitor") / "static"))
#: Points a history answer holds at most (longer windows are summed into wider steps).
MAX_HISTORY_POINTS = 300

_STATUS = {
    UnknownQueueError: 404,
    JobNotFoundError: 404,
    JobStateError: 409,
    InvalidRequestError: 400,
}


def _problem(status: int, title: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers or None,
    )


def _refusal(verdict: Verdict, _: object) -> JSONResponse:
    title = "HostNotAllowed" if verdict.refusal is Refusal.HOST else "CrossSiteRequest"
    return _problem(verdict.status, title, verdict.detail)


# --- who is asking ------------------------------------------------------------------------------
def _viewer(request: Request) -> Principal:
    access: Access = request.app.state.access
    principal = access.identify(request.headers.get("authorization"))
    if principal is None:
        raise HTTPException(
            401,
            "valid credentials are required",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
    return principal


def _actor(request: Request, principal: Annotated[Principal, Depends(_viewer)]) -> Principal:
    if not principal.can_act:
        access: Access = request.app.state.access
        why = "the monitor is read-only" if access.read_only else "this account is read-only"
        raise HTTPException(403, why)
    if not request.headers.get(ACTION_HEADER):
        raise HTTPException(403, f"actions need the {ACTION_HEADER} header")
    return principal


Viewer = Annotated[Principal, Depends(_viewer)]
Actor = Annotated[Principal, Depends(_actor)]


class _Runtime:
    """What the lifespan opens: one Redis client and what is built on it."""

    redis: Redis
    inspector: Inspector
    actions: Actions
    broadcaster: Broadcaster


def create_app(settings: Settings, redis_url: str) -> FastAPI:
    """The monitor for ``settings`` on the Redis at ``redis_url`` (opened at start-up)."""
    access = Access(settings)
    rt = _Runtime()
    viewer = _viewer

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        rt.redis = await open_checked(settings, redis_url)
        rt.inspector = Inspector(rt.redis, settings)
        rt.actions = Actions(rt.inspector, settings.monitor_error_sample)
        rt.broadcaster = Broadcaster(_live_overview, settings.monitor_refresh_s)
        log.info(
            "monitor_ready",
            extra={"fields": {"auth": access.enabled, "read_only": settings.monitor_read_only}},
        )
        try:
            yield
        finally:
            await rt.broadcaster.close()
            await rt.redis.aclose()

    async def _live_overview() -> dict[str, Any]:
        summaries = await rt.inspector.overview()
        return {"queues": [s.to_json() for s in summaries]}

    app = FastAPI(
        title="Conveyor monitor",
        lifespan=lifespan,
        docs_url=None,  # served below, behind the same credentials as everything else
        redoc_url=None,
        openapi_url=None,
    )
    app.state.access = access
    guard = RequestGuard(
        allowed_hosts=settings.http_allowed_hosts,
        bound_host=settings.monitor_host,
        public_paths=("/healthz", "/readyz"),
    )
    app.add_middleware(GuardMiddleware, guard=guard, render=_refusal)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # --- errors ------------------------------------------------------------------------------
    @app.exception_handler(ConveyorError)
    async def conveyor_error(_: Request, exc: ConveyorError) -> JSONResponse:
        status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 400)
        return _problem(status, type(exc).__name__, str(exc))

    @app.exception_handler(RedisError)
    async def redis_error(_: Request, exc: RedisError) -> JSONResponse:
        log.warning("monitor_redis_error", extra={"fields": {"error": str(exc)}})
        if is_out_of_memory(exc):
            return _problem(
                507, "RedisFull", "Redis is full (maxmemory reached) and refuses writes"
            )
        return _problem(503, "RedisUnavailable", f"Redis did not answer: {exc}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, "HTTPError", str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _problem(400, "InvalidRequest", "; ".join(parts))

    # --- pages and health ------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index(_: Viewer) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        bound = settings.monitor_redis_timeout_s
        try:
            async with asyncio.timeout(bound):
                memory = await rt.redis.info("memory")
        except TimeoutError:
            return _problem(503, "NotReady", f"Redis did not answer within {bound:g} s")
        except (RedisError, OSError) as exc:
            return _problem(503, "NotReady", f"Redis did not answer: {exc}")
        full = memory_full(memory)
        if full:
            return _problem(507, "RedisFull", full)
        return JSONResponse({"status": "ready"})

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi_document(_: Viewer) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False)
    async def openapi_page(_: Viewer) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title=f"{app.title} API")

    @app.get("/metrics", tags=["metrics"])
    async def metrics(request: Request) -> Response:
        if not settings.monitor_metrics_public:
            viewer(request)
        summaries = await rt.inspector.overview()
        body = render_metrics([s.to_metrics() for s in summaries])
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    # --- reading ---------------------------------------------------------------------------------
    @app.get("/api/me", tags=["read"])
    async def me(principal: Viewer) -> dict[str, object]:
        return {
            **principal.to_json(),
            "auth": access.enabled,
            "refresh_s": settings.monitor_refresh_s,
            "history_minutes": settings.stats_history_minutes,
        }

    @app.get("/api/overview", tags=["read"])
    async def overview(_: Viewer) -> dict[str, Any]:
        return await _live_overview()

    @app.get("/api/events", tags=["read"])
    async def events(_: Viewer) -> StreamingResponse:
        return StreamingResponse(
            event_stream(rt.broadcaster),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/workers", tags=["read"])
    async def workers(_: Viewer, queue: str | None = None) -> dict[str, Any]:
        names = None
        if queue is not None:
            await rt.inspector.client(queue)  # 404 for an unknown queue
            names = [queue]
        found = await rt.inspector.workers(names)
        return {"workers": [asdict(w) for w in found]}

    @app.get("/api/queues/{queue}/jobs", tags=["read"])
    async def jobs(
        _: Viewer,
        queue: str,
        state: str = "waiting",
        page: Annotated[int, Query(ge=0)] = 0,
        size: Annotated[int, Query(ge=1, le=200)] = 25,
        q: Annotated[str, Query(max_length=256)] = "",
    ) -> dict[str, Any]:
        client = await rt.inspector.client(queue)
        result = await list_jobs(client, parse_state(state), page=page, size=size, search=q)
        return result.to_json()

    def _sent_id(request: Request, queue: str, job_id: str) -> str:
        """The path's job id as the client sent it: an encoded ``/`` names no job (ids never
        contain one), it must not reach another route (``x%2Fretry``)."""
        sent = encoded_slash_segment(request.scope)
        if sent is not None:
            raise JobNotFoundError(sent, queue)
        return job_id

    @app.get("/api/queues/{queue}/jobs/{job_id}", tags=["read"])
    async def job(_: Viewer, request: Request, queue: str, job_id: str) -> dict[str, Any]:
        job_id = _sent_id(request, queue, job_id)
        return await job_detail(await rt.inspector.client(queue), job_id)

    @app.get("/api/queues/{queue}/errors", tags=["read"])
    async def errors(_: Viewer, queue: str) -> dict[str, Any]:
        client = await rt.inspector.client(queue)
        return (await error_groups(client, settings.monitor_error_sample)).to_json()

    @app.get("/api/queues/{queue}/history", tags=["read"])
    async def history(
        _: Viewer, queue: str, minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 15
    ) -> dict[str, Any]:
        await rt.inspector.client(queue)
        minutes = min(minutes, settings.stats_history_minutes)
        step = max(1, math.ceil(minutes * 60 / MAX_HISTORY_POINTS))
        points = await read_history(rt.redis, settings.prefix, queue, minutes=minutes, step_s=step)
        return {"minutes": minutes, "step_s": step, "points": [asdict(p) for p in points]}

    # --- acting ----------------------------------------------------------------------------------
    @app.post("/api/queues/{queue}/jobs/{job_id}/retry", tags=["act"])
    async def retry(who: Actor, request: Request, queue: str, job_id: str) -> dict[str, Any]:
        job_id = _sent_id(request, queue, job_id)
        return await rt.actions.retry(queue, job_id, who.user)

    @app.delete("/api/queues/{queue}/jobs/{job_id}", tags=["act"])
    async def remove(who: Actor, request: Request, queue: str, job_id: str) -> dict[str, Any]:
        job_id = _sent_id(request, queue, job_id)
        return await rt.actions.remove(queue, job_id, who.user)

    @app.post("/api/queues/{queue}/retry-failed", tags=["act"])
    async def retry_failed(who: Actor, queue: str) -> dict[str, Any]:
        return await rt.actions.retry_failed(queue, who.user)

    @app.post("/api/queues/{queue}/pause", tags=["act"])
    async def pause(who: Actor, queue: str) -> dict[str, Any]:
        return await rt.actions.pause(queue, who.user)

    @app.post("/api/queues/{queue}/resume", tags=["act"])
    async def resume(who: Actor, queue: str) -> dict[str, Any]:
        return await rt.actions.resume(queue, who.user)

    @app.post("/api/queues/{queue}/errors/retry", tags=["act"])
    async def retry_group(
        who: Actor, queue: str, pattern: Annotated[str, Body(embed=True, min_length=1)]
    ) -> dict[str, Any]:
        return await rt.actions.retry_group(queue, pattern, who.user)

    @app.post("/api/queues/{queue}/errors/remove", tags=["act"])
    async def remove_group(
        who: Actor, queue: str, pattern: Annotated[str, Body(embed=True, min_length=1)]
    ) -> dict[str, Any]:
        return await rt.actions.remove_group(queue, pattern, who.user)

    return app
