"""The monitor under review: its API documents need credentials, and its readiness notices a
frozen Redis within ``CONVEYOR_MONITOR_REDIS_TIMEOUT_S`` (it took 20.7 s)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.testing import wait_for
from tests.support.monitor import serve_monitor

USERS = "admin:s3cret:rw,viewer:look:ro"
#: Slack for a loaded 2-core machine on top of the bound.
SLACK_S = 2.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        yield redis
    finally:
        if redis.process and redis.process.poll() is None:
            os.kill(redis.process.pid, signal.SIGCONT)
        redis.stop()


async def test_the_api_documents_need_credentials_when_users_are_set(settings: Settings) -> None:
    async with serve_monitor(settings, monitor_users=USERS) as anon:
        for path in ("/api/docs", "/api/openapi.json"):
            refused = await anon.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic ")
            wrong = await anon.get(path, auth=("admin", "nope"))
            assert wrong.status_code == 401, path
        viewer = await anon.get("/api/openapi.json", auth=("viewer", "look"))
        assert viewer.status_code == 200
        assert "/api/overview" in viewer.json()["paths"]
        page = await anon.get("/api/docs", auth=("viewer", "look"))
        assert page.status_code == 200
        assert "/api/openapi.json" in page.text
    async with serve_monitor(settings) as open_monitor:  # no accounts: open, as everything
        assert (await open_monitor.get("/api/openapi.json")).status_code == 200


async def test_readiness_notices_a_frozen_redis_within_its_bound(
    settings: Settings, server: RedisServer
) -> None:
    own = settings.model_copy(update={"redis_url": server.url, "redis_wait_s": 1.0})
    async with serve_monitor(own, monitor_redis_timeout_s=1.0) as monitor:
        assert (await monitor.get("/readyz")).status_code == 200
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        frozen = await monitor.get("/readyz")
        elapsed = time.monotonic() - started
        assert frozen.status_code == 503
        assert "within 1 s" in frozen.json()["detail"]
        assert elapsed < 1.0 + SLACK_S
        assert (await monitor.get("/healthz")).status_code == 200
        os.kill(server.process.pid, signal.SIGCONT)

        async def ready() -> bool:
            return (await monitor.get("/readyz")).status_code == 200

        await wait_for(ready, 15, message="readiness after SIGCONT")
