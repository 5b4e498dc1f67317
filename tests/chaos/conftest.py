"""Chaos fixtures: each test gets its own redis-server (so it can kill it) and real worker
processes it can SIGKILL, SIGTERM and restart. Figures go to tests/artifacts/reliability.jsonl
for docs/reliability.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.embedded import RedisServer
from conveyor.ports import free_port
from conveyor.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"

pytestmark = pytest.mark.chaos


@dataclass
class Chaos:
    """One scenario's world: a Redis it owns, the processes it runs, the figures it reports."""

    tmp: Path
    queue: str = "taskQueue"
    prefix: str = "chaos"
    redis: RedisServer | None = None
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    #: A URL of the test's own making (a Sentinel setup) instead of ``redis``'s.
    redis_url: str | None = None

    def start_redis(self, **kwargs: Any) -> RedisServer:
        if self.redis is None:
            self.redis = RedisServer(self.tmp / "redis", port=free_port(), **kwargs)
        self.redis.start()
        return self.redis

    @property
    def url(self) -> str:
        if self.redis_url is not None:
            return self.redis_url
        assert self.redis is not None
        return self.redis.url

    def client(self, redis: Redis) -> QueueClient:
        """A client of the scenario's queue that knows the test tasks (tests.support.tasks)."""
        return QueueClient(
            redis,
            queue=self.queue,
            prefix=self.prefix,
            registry=load_registry(["tests.support.tasks"]),
            pipelined=False,
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            PYTHONPATH=str(REPO),
            CONVEYOR_REDIS_URL=self.url,
            CONVEYOR_QUEUE=self.queue,
            CONVEYOR_PREFIX=self.prefix,
            CONVEYOR_TASKS="tests.support.tasks",
            CONVEYOR_DATA_DIR=str(self.tmp / "data"),
            CONVEYOR_LOCK_DURATION_MS="1000",
            CONVEYOR_STALLED_INTERVAL_MS="1000",
            CONVEYOR_BACKOFF_DELAY_MS="20",
            CONVEYOR_REDIS_WAIT_S="60",
        )
        env.update(extra)
        return env

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[str]:
        log = open(self.tmp / f"proc-{len(self.procs)}.log", "w+")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", *args],
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        proc.log = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        log = proc.log  # type: ignore[attr-defined]
        log.flush()
        return Path(log.name).read_text()

    def wait_started(self, proc: subprocess.Popen[str], marker: str = "worker_started") -> None:
        deadline = time.monotonic() + 60  # start-up took 10-13 s at load 13, once over 30 s
        while marker not in self.output(proc):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{marker} never seen:\n{self.output(proc)[-3000:]}")
            time.sleep(0.02)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.log.close()  # type: ignore[attr-defined]
        if self.redis is not None:
            self.redis.stop()


async def enqueue_all(client: QueueClient, specs: list[JobSpec]) -> list[str]:
    """Enqueue ``specs`` in bulks of 500; their ids, in order."""
    ids: list[str] = []
    for start in range(0, len(specs), 500):
        ids += await client.enqueue_many(specs[start : start + 500])
    return ids


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    world = Chaos(tmp=tmp_path)
    try:
        yield world
    finally:
        world.cleanup()


@pytest.fixture
async def closing() -> AsyncIterator[list[Redis]]:
    """Redis clients a test opened, closed even when the test fails."""
    clients: list[Redis] = []
    yield clients
    for client in clients:
        await client.aclose()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record one scenario's figures (one JSON object a line) and print them."""

    def write(**figures: Any) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        row = {"scenario": request.node.name, **figures}
        with (ARTIFACTS / "reliability.jsonl").open("a") as out:
            out.write(json.dumps(row) + "\n")
        print("reliability:", json.dumps(row))

    return write
