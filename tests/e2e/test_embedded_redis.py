"""The embedded Redis outlives any one command: a stable address, stopped by the last user
(or ``conveyor redis stop``), and services that reconnect when it comes back."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

import httpx

from conveyor.config import Settings
from conveyor.embedded import running_url
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync
from tests.e2e.conftest import output_of, run_cli

Spawn = Callable[..., subprocess.Popen[str]]


def ready(base: str) -> int:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0, output_of(proc)[-3000:]


def test_embedded_redis_outlives_the_command_that_started_it(
    spawn: Spawn, service_env: dict[str, str], settings: Settings
) -> None:
    embedded = {"CONVEYOR_REDIS_URL": "", "CONVEYOR_REDIS_WAIT_S": "1"}
    env = {**service_env, **embedded}
    data = settings.data_dir
    first = spawn("worker", env=embedded)
    url = wait_for_sync(lambda: running_url(data), timeout=60, message="no embedded Redis")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = spawn("api", "--port", str(port), env=embedded)
    wait_for_sync(lambda: ready(base) == 200, timeout=60, message="the API never became ready")
    assert "embedded_redis_found" in output_of(api)

    # The worker that started Redis leaves: the API still uses it, so it keeps running.
    stop(first)
    assert running_url(data) == url
    assert ready(base) == 200

    # Stopped on purpose: the API says so (503) instead of hanging...
    result = run_cli("redis", "stop", env=env)
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    assert running_url(data) is None
    wait_for_sync(lambda: ready(base) == 503, timeout=30)

    # ...and a new worker starts it again at the same address; the API reconnects.
    second = spawn("worker", env=embedded)
    assert wait_for_sync(lambda: running_url(data), timeout=60) == url
    wait_for_sync(lambda: ready(base) == 200, timeout=30, message="the API did not reconnect")
    job = httpx.post(f"{base}/enqueue", json={"name": "simulate", "data": {"duration_ms": 0}})
    assert job.status_code == 201, job.text
    job_url = f"{base}/jobs/{job.json()['id']}"
    wait_for_sync(lambda: httpx.get(job_url).json()["state"] == "completed", timeout=60)
    status = run_cli("redis", "status", env=env)
    assert url is not None
    assert status.stdout.startswith(url)
    assert "2 conveyor processes" in status.stdout

    # The last user to leave stops it.
    stop(api)
    assert running_url(data) == url
    stop(second)
    assert running_url(data) is None
    assert "not running" in run_cli("redis", "status", env=env).stdout


def test_a_user_that_was_killed_does_not_keep_it_running(
    spawn: Spawn, service_env: dict[str, str], settings: Settings
) -> None:
    embedded = {"CONVEYOR_REDIS_URL": ""}
    killed = spawn("worker", env=embedded)
    url = wait_for_sync(lambda: running_url(settings.data_dir), timeout=60)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert running_url(settings.data_dir) == url  # nobody left to stop it...
    result = run_cli("produce", "-n", "1", "--quiet", env={**service_env, **embedded})
    assert result.returncode == 0, result.stderr
    assert running_url(settings.data_dir) is None  # ...until the next user leaves
