"""Serving the app with uvicorn: one process, or ``api_workers`` processes on one port.

Before the server starts, the catalogue is loaded and Redis is checked, so a bad setting or an
unreachable Redis ends ``conveyor api`` with one readable line instead of a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr
from uvicorn.supervisors import Multiprocess

from conveyor.config import Settings
from conveyor.observability.logging import configure_logging
from conveyor.registry import load_registry
from conveyor.services.api.app import create_app
from conveyor.services.redis_connection import open_checked, redis_url
from conveyor.services.serving import (
    ConnectionLimits,
    ServingConfig,
    ensure_descriptors,
    serve,
)

#: Carries the parent's settings (with the resolved Redis URL) to worker processes.
SETTINGS_ENV = "CONVEYOR_API_PROCESS_SETTINGS"
#: How long uvicorn waits for a worker process to answer (its start-up imports included)
#: before it replaces it; uvicorn's 5 s is short on a busy machine.
WORKER_HEALTHCHECK_S = 30


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


def _dump(settings: Settings) -> str:
    fields = {name: _reveal(getattr(settings, name)) for name in Settings.model_fields}
    return json.dumps(fields, default=str)


def app_from_environment() -> FastAPI:
    """The factory each worker process calls (``uvicorn --factory``)."""
    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings(**json.loads(raw)) if raw else Settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.redis_url:
        raise RuntimeError(f"{SETTINGS_ENV} or CONVEYOR_REDIS_URL must name the Redis to use")
    return create_app(settings, settings.redis_url)


async def _preflight(settings: Settings, url: str) -> None:
    load_registry(settings.tasks)
    redis = await open_checked(settings, url)
    await redis.aclose()


def _server_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_config": None,
        "access_log": settings.api_access_log,
        "server_header": False,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "lifespan": "on",
        "ws": "none",
    }


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish before the exit."""
    with redis_url(settings) as url:
        asyncio.run(_preflight(settings, url))
        limits = ConnectionLimits.from_settings(settings)
        if settings.api_workers == 1:
            config = ServingConfig(
                create_app(settings, url), limits=limits, **_server_options(settings)
            )
            serve(config)
            return
        os.environ[SETTINGS_ENV] = _dump(settings.model_copy(update={"redis_url": url}))
        config = ServingConfig(
            "conveyor.services.api.server:app_from_environment",
            limits=limits,
            factory=True,
            workers=settings.api_workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            **_server_options(settings),
        )
        ensure_descriptors(limits)
        # What uvicorn.run does for several workers, with our config (and its protocol).
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
