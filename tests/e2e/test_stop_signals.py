"""``conveyor monitor`` and ``conveyor produce`` as real processes stopped by SIGTERM, as a
container runtime stops them: a clean stop exits 0 and leaves nothing running behind it.

uvicorn re-raised the SIGTERM it had handled, so the monitor died by the signal (exit 143 in a
container) before it could stop an embedded Redis it had started; the producer had no handler.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from conveyor.config import Settings
from conveyor.embedded import ping
from conveyor.ports import free_port
from conveyor.testing import wait_for, wait_for_sync
from tests.e2e.conftest import output_of

pytestmark = pytest.mark.e2e

Spawn = Callable[..., subprocess.Popen[str]]


def _answers(url: str, proc: subprocess.Popen[str]) -> bool:
    assert proc.poll() is None, output_of(proc)
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_monitor_on_its_own_embedded_redis_exits_0_and_stops_the_redis(
    spawn: Spawn, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    port = free_port()
    proc = spawn(
        "monitor", "--host", "127.0.0.1", "--port", str(port),
        env={"CONVEYOR_REDIS_URL": "", "CONVEYOR_DATA_DIR": str(data)},
    )  # fmt: skip
    wait_for_sync(lambda: _answers(f"http://127.0.0.1:{port}/readyz", proc), timeout=60)
    redis_port = int((data / "redis" / "port").read_text())
    assert ping(redis_port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, output_of(proc)
    # The last command holding the embedded Redis stops it (its port file stays with the data).
    assert wait_for_sync(lambda: not ping(redis_port), timeout=10)


async def test_producer_stops_between_batches_on_sigterm_and_exits_0(
    spawn: Spawn, redis: Redis, settings: Settings
) -> None:
    proc = spawn(
        "produce", "--count", "100000", "--rate", "50", "--quiet",
        env={"CONVEYOR_TASKS": "conveyor.tasks.builtin"},
    )  # fmt: skip
    wait_key = f"{settings.prefix}:{settings.queue}:wait"

    async def some_enqueued() -> bool:
        assert proc.poll() is None, output_of(proc)
        return int(await redis.llen(wait_key)) >= 5

    await wait_for(some_enqueued, timeout=30, message="the producer enqueued nothing")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, output_of(proc)
    enqueued = int(await redis.llen(wait_key))
    assert 5 <= enqueued < 100000
    assert f"enqueued {enqueued} simulate jobs" in output_of(proc)
