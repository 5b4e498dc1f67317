"""When Redis goes away or hangs, the API answers 503 with Retry-After, quickly, and
recovers by itself when Redis is back. These tests start and stop their own redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.errors import RedisUnavailableError
from conveyor.redis import connect
from conveyor.services.api import create_app
from conveyor.testing import wait_for
from tests.support.api import api_client, registry

TIMEOUT_S = 0.5
#: Generous: the answer must come near TIMEOUT_S, never after a socket timeout or a hang.
ANSWER_WITHIN_S = 4.0

CONFIGS = [
    pytest.param({}, id="fast-path+batching"),
    pytest.param({"api_fast_path": False, "api_batch_enqueue": False}, id="route+single"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        yield redis
    finally:
        if redis.process and redis.process.poll() is None:
            os.kill(redis.process.pid, signal.SIGCONT)
        redis.stop()


@pytest.fixture
def own_settings(settings: Settings, server: RedisServer) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": server.url,
            "redis_wait_s": 1.0,
            "api_redis_timeout_s": TIMEOUT_S,
            "api_retry_after_s": 3,
        }
    )


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "3"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:conveyor:problem:redis-unavailable"


async def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await call
    return response, time.monotonic() - started


async def job_count(url: str, settings: Settings) -> int:
    client = connect(url)
    try:
        queue = QueueClient(client, queue=settings.queue, prefix=settings.prefix, pipelined=False)
        return sum((await queue.counts()).values())
    finally:
        await client.aclose()


@pytest.mark.parametrize("config", CONFIGS)
async def test_redis_stopped_means_503_quickly_then_recovery(
    own_settings: Settings, server: RedisServer, tmp_path: Path, config: dict[str, Any]
) -> None:
    async with api_client(own_settings, server.url, **config) as api:
        first = await api.post("/enqueue", json={"name": "echo", "data": {"value": 1}})
        assert first.status_code == 201
        server.stop()

        calls = [
            api.post("/enqueue", json={"name": "echo", "data": {"value": 2}}),
            api.post("/enqueue/bulk", json={"jobs": [{"name": "echo"}]}),
            api.get(f"/jobs/{first.json()['id']}"),
            api.post(f"/jobs/{first.json()['id']}/retry"),
            api.get(f"/queues/{own_settings.queue}"),
            api.get("/readyz"),
        ]
        for call in calls:
            response, elapsed = await timed(call)
            assert_unavailable(response)
            assert elapsed < ANSWER_WITHIN_S
        assert (await api.get("/healthz")).status_code == 200
        bad = await api.post("/enqueue", json={"name": "nope"})
        assert bad.status_code == 422  # validation still answers without Redis

        restarted = RedisServer(server.data_dir, port=server.port).start()
        server.process = restarted.process

        async def ready() -> bool:
            return (await api.get("/readyz")).status_code == 200

        await wait_for(ready, timeout=15)
        again = await api.post("/enqueue", json={"name": "echo", "data": {"value": 3}})
        assert again.status_code == 201
    assert await job_count(server.url, own_settings) == 2


@pytest.mark.parametrize("config", CONFIGS)
async def test_redis_hanging_means_503_within_the_bound_not_a_hang(
    own_settings: Settings, server: RedisServer, config: dict[str, Any]
) -> None:
    assert server.process is not None
    async with api_client(own_settings, server.url, **config) as api:
        assert (await api.post("/enqueue", json={"name": "echo"})).status_code == 201
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            headers = {"Idempotency-Key": "during-the-hang"}
            body = {"name": "echo", "data": {"value": "h"}}
            responses = await asyncio.gather(
                *(timed(api.post("/enqueue", json=body, headers=headers)) for _ in range(3)),
                timed(api.get("/readyz")),
                timed(api.get(f"/queues/{own_settings.queue}")),
            )
            for response, elapsed in responses:
                assert_unavailable(response)
                assert elapsed < ANSWER_WITHIN_S
        finally:
            os.kill(server.process.pid, signal.SIGCONT)

        async def retried() -> httpx.Response | None:
            response = await api.post("/enqueue", json=body, headers=headers)
            return response if response.status_code in (200, 201) else None

        # A 503 after a timeout is ambiguous (Redis may have run the add late); retrying with
        # the same Idempotency-Key settles it: exactly one job either way.
        response = await wait_for(retried, timeout=15)
        assert response.json()["id"].startswith("idem-")
    assert await job_count(server.url, own_settings) == 2


async def test_start_up_without_redis_fails_within_the_wait(
    settings: Settings, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "gone").start()
    url = server.url
    server.stop()
    app = create_app(settings.model_copy(update={"redis_wait_s": 0.3}), url, registry=registry)
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="did not answer"):
        async with app.router.lifespan_context(app):
            pass
    assert time.monotonic() - started < ANSWER_WITHIN_S
