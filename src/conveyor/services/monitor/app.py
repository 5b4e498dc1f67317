"""The monitor's web app: the dashboard, its JSON API, the live event stream and /metrics.

``create_app`` only wires: the lifespan builds the ``MonitorState`` routes receive as a
dependency (``state.Monitor``), the routers live in ``routes/``, every error leaves through
``problems.handle`` as the API's problem+json.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from conveyor import __version__
from conveyor.config import Settings
from conveyor.log import get_logger
from conveyor.services.guard import GuardMiddleware, RequestGuard
from conveyor.services.monitor import problems, schedules
from conveyor.services.monitor.actions import Actions
from conveyor.services.monitor.auth import Access
from conveyor.services.monitor.inspector import Inspector
from conveyor.services.monitor.routes import acting, cleanup, pages, reading
from conveyor.services.monitor.sse import Broadcaster
from conveyor.services.monitor.state import MonitorState
from conveyor.services.redis_connection import QueueConnections, open_checked

log = get_logger("conveyor.monitor")


def create_app(settings: Settings, redis_url: str) -> FastAPI:
    """The monitor for ``settings`` on the Redis at ``redis_url`` (opened at start-up)."""
    access = Access(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = await open_checked(settings, redis_url)
        conns = QueueConnections(settings, redis_url, redis)
        inspector = Inspector(redis, settings, conns)

        async def overview() -> dict[str, Any]:
            return {"queues": [s.to_json() for s in await inspector.overview()]}

        state = MonitorState(
            settings=settings,
            access=access,
            redis=redis,
            inspector=inspector,
            actions=Actions(inspector, settings.monitor_error_sample),
            broadcaster=Broadcaster(overview, settings.monitor_refresh_s),
        )
        app.state.monitor = state
        log.info("monitor_ready", auth=access.enabled, read_only=settings.monitor_read_only)
        try:
            yield
        finally:
            await state.broadcaster.close()
            await conns.aclose()
            await redis.aclose()

    app = FastAPI(
        title="Conveyor monitor",
        lifespan=lifespan,
        docs_url=None,  # served by routes/pages.py, behind the same credentials as the rest
        redoc_url=None,
        openapi_url=None,
    )
    for handled in problems.HANDLED:
        app.add_exception_handler(handled, problems.handle)
    guard = RequestGuard(
        allowed_hosts=settings.http_allowed_hosts,
        bound_host=settings.monitor_host,
        public_paths=("/healthz", "/readyz"),
    )
    app.add_middleware(GuardMiddleware, guard=guard, render=problems.render_refusal)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    for router in (
        pages.router, reading.router, cleanup.router, acting.router, schedules.router
    ):  # fmt: skip
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=__version__, routes=app.routes)
            doc["x-problem-types"] = {
                t.uri: {"status": t.status, "title": t.title} for t in problems.MONITOR_TYPES
            }
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
