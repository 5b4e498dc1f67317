"""Run the monitor app under a real uvicorn server in the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn

from conveyor.config import Settings
from conveyor.services.monitor import create_app
from conveyor.testing import wait_for


@contextlib.asynccontextmanager
async def serve_monitor(
    settings: Settings, *, auth: tuple[str, str] | None = None, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The monitor for ``settings`` (with ``overrides``) on a free port; yields a client."""
    merged = Settings(**{**settings.model_dump(), **overrides})
    app = create_app(merged, merged.redis_url or "")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, ws="none", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), 10, message="monitor start")
        if task.done():
            task.result()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, auth=auth
        ) as http:
            yield http
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
