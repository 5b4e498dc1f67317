"""The dashboard page, its API documents, health checks and Prometheus /metrics."""

from __future__ import annotations

import asyncio
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from redis.exceptions import RedisError

from conveyor.observability.metrics import METRICS_CONTENT_TYPE, render_metrics
from conveyor.redis import memory_full
from conveyor.services.monitor.auth import MetricsReader, Viewer
from conveyor.services.monitor.models import Health
from conveyor.services.monitor.schedules import schedule_metrics
from conveyor.services.monitor.state import Monitor
from conveyor.services.problems import REDIS_FULL, REDIS_UNAVAILABLE, ProblemError

STATIC_DIR = Path(str(files("conveyor.services.monitor") / "static"))

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index(_: Viewer) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/healthz", tags=["health"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", tags=["health"])
async def readyz(monitor: Monitor) -> Health:
    bound = monitor.settings.monitor_redis_timeout_s
    try:
        async with asyncio.timeout(bound):
            memory = await monitor.redis.info("memory")
    except TimeoutError as exc:
        detail = f"Redis did not answer within {bound:g} s"
        raise ProblemError(REDIS_UNAVAILABLE, detail) from exc
    except (RedisError, OSError) as exc:
        raise ProblemError(REDIS_UNAVAILABLE, f"Redis did not answer: {exc}") from exc
    full = memory_full(memory)
    if full:
        raise ProblemError(REDIS_FULL, full)
    return Health(status="ready")


@router.get("/api/openapi.json", include_in_schema=False)
async def openapi_document(_: Viewer, request: Request) -> dict[str, Any]:
    document: dict[str, Any] = request.app.openapi()
    return document


@router.get("/api/docs", include_in_schema=False)
async def openapi_page(_: Viewer, request: Request) -> HTMLResponse:
    title = f"{request.app.title} API"
    return get_swagger_ui_html(openapi_url="/api/openapi.json", title=title)


@router.get("/metrics", tags=["metrics"], response_class=Response)
async def metrics(_: MetricsReader, monitor: Monitor) -> Response:
    summaries = await monitor.inspector.overview()
    schedules = await schedule_metrics(monitor, [s.name for s in summaries])
    body = render_metrics([s.to_metrics() for s in summaries], schedules)
    return Response(body, media_type=METRICS_CONTENT_TYPE)
