"""Fixtures: a real redis-server for the session, and an own queue and prefix for each test.

Set CONVEYOR_TEST_REDIS_URL to use a Redis you run; otherwise a private redis-server is
started on a free port. Nothing here skips: no Redis means the tests fail, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.hooks import WorkerHooks
from conveyor.policy import RetryPolicy
from conveyor.redis import connect
from conveyor.registry import TaskRegistry
from conveyor.worker import Worker, WorkerOptions

REPO = Path(__file__).resolve().parents[1]


#: The process-wide switches ``configure_logging`` turns off (conveyor.observability.logging).
_LOGGING_SWITCHES = (
    "_srcfile",
    "logThreads",
    "logProcesses",
    "logMultiprocessing",
    "logAsyncioTasks",
)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a CLI command in-process (typer's CliRunner) configures logging as
    the entrypoint does; put the logging module back, so later tests see records with their
    caller's file and line and pytest's own handlers."""
    switches = {
        name: getattr(logging, name) for name in _LOGGING_SWITCHES if hasattr(logging, name)
    }
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quietened = {
        name: logging.getLogger(name).level for name in ("asyncio", "httpx", "uvicorn.access")
    }
    yield
    for name, value in switches.items():
        setattr(logging, name, value)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in quietened.items():
        logging.getLogger(name).setLevel(value)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CONVEYOR_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(redis_url: str, queue_name: str, prefix: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        queue=queue_name,
        prefix=prefix,
        data_dir=tmp_path / "conveyor",
        backoff_delay_ms=20,
        lock_duration_ms=5000,
        stalled_interval_ms=5000,
        shutdown_grace_s=10,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_client(
    redis: Redis, settings: Settings
) -> AsyncIterator[Callable[..., QueueClient]]:
    """QueueClients on this test's queue; all are closed at teardown."""
    made: list[QueueClient] = []

    def make(registry: TaskRegistry | None = None, **overrides: Any) -> QueueClient:
        params: dict[str, Any] = {
            "queue": settings.queue,
            "prefix": settings.prefix,
            "registry": registry,
            "default_policy": RetryPolicy.from_retries(
                settings.retries, "exponential", settings.backoff_delay_ms
            ),
        }
        params.update(overrides)
        client = QueueClient(redis, **params)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def make_worker(redis_url: str, settings: Settings) -> AsyncIterator[Callable[..., Worker]]:
    """Start Workers in this test's event loop; all are stopped and drained at teardown."""
    started: list[tuple[Worker, asyncio.Task[None], list[Redis]]] = []

    def make(
        registry: TaskRegistry,
        *,
        hooks: WorkerHooks | None = None,
        grace_s: float = 5.0,
        **overrides: Any,
    ) -> Worker:
        params: dict[str, Any] = {
            "queue": settings.queue,
            "prefix": settings.prefix,
            "concurrency": 10,
            "default_policy": RetryPolicy.from_retries(5, "exponential", settings.backoff_delay_ms),
            "lock_duration_ms": settings.lock_duration_ms,
            "stalled_interval_ms": settings.stalled_interval_ms,
            "drain_delay_s": 1.0,
        }
        params.update(overrides)
        options = WorkerOptions(**params)
        redis = connect(redis_url)
        blocking = connect(redis_url, timeout_s=options.drain_delay_s + 5)
        worker = Worker(redis, registry, options, blocking_redis=blocking, hooks=hooks)
        task = asyncio.create_task(worker.run(grace_s=grace_s))
        started.append((worker, task, [redis, blocking]))
        return worker

    yield make
    for worker, _, _ in started:
        worker.stop()
    for _, task, clients in started:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        for client in clients:
            await client.aclose()
