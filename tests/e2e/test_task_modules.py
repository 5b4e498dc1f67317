"""Task modules from the current directory, through the installed ``conveyor`` console script;
and a worker that cannot start stops its supervisor with one line instead of restarting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.jobs import JobState
from conveyor.testing import wait_for_state

#: The console script that ``pip install`` / ``uv sync`` put beside this interpreter.
CONSOLE_SCRIPT = Path(sys.executable).parent / "conveyor"

TASKS = """\
from conveyor import JobContext, TaskRegistry

registry = TaskRegistry()


@registry.task("hello")
async def hello(payload: dict, ctx: JobContext) -> str:
    return "hello from myapp"
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "myapp").mkdir(parents=True)
    (folder / "myapp" / "__init__.py").write_text("")
    (folder / "myapp" / "tasks.py").write_text(TASKS)
    return folder


@pytest.fixture
def app_env(service_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in service_env.items() if k != "PYTHONPATH"}
    return {**env, "CONVEYOR_TASKS": "myapp.tasks", "CONVEYOR_REDIS_WAIT_S": "2"}


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def conveyor(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("conveyor: error:")]


async def test_console_script_imports_tasks_from_the_current_directory(
    app_dir: Path,
    app_env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    redis: Redis,
    settings: Settings,
) -> None:
    proc = start(["worker", "--processes", "2"], cwd=app_dir, env=app_env)
    procs.append(proc)
    client = QueueClient(redis, queue=settings.queue, prefix=settings.prefix, pipelined=False)
    job_id = await client.enqueue("hello", {})
    view = await wait_for_state(client, job_id, JobState.COMPLETED, timeout=60)
    assert view.info.return_value == "hello from myapp"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_catalogue_not_found_names_the_folder_and_stops_at_once(
    app_dir: Path, app_env: dict[str, str], processes: str
) -> None:
    elsewhere = app_dir.parent / "elsewhere"
    elsewhere.mkdir()
    result = conveyor("worker", "--processes", processes, cwd=elsewhere, env=app_env)
    assert result.returncode == 1
    [line] = error_lines(result)
    assert f"cannot import 'myapp.tasks' from {elsewhere} (the current directory)" in line
    assert "Traceback" not in result.stderr


def test_a_worker_process_that_cannot_start_stops_the_supervisor(
    app_dir: Path, app_env: dict[str, str], tmp_path: Path
) -> None:
    """A Redis with an eviction policy is refused by each worker process as it starts; the
    supervisor used to restart them for ever with a growing backoff."""
    server = RedisServer(tmp_path / "lru", extra_args=["--maxmemory-policy", "allkeys-lru"]).start()
    try:
        env = {**app_env, "CONVEYOR_REDIS_URL": server.url}
        result = conveyor("worker", "--processes", "2", cwd=app_dir, env=env)
    finally:
        server.stop()
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "could not start" in line
    assert "allkeys-lru" in line
    assert "worker_process_exited" not in result.stderr  # no restart was attempted


def test_up_stops_with_the_error_of_a_child_that_cannot_start(
    app_dir: Path, app_env: dict[str, str], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "lru", extra_args=["--maxmemory-policy", "allkeys-lru"]).start()
    try:
        env = {**app_env, "CONVEYOR_REDIS_URL": server.url}
        result = conveyor("up", "--no-api", "--no-monitor", "-w", "1", cwd=app_dir, env=env)
    finally:
        server.stop()
    assert result.returncode == 1, result.stdout[-3000:]
    [line] = error_lines(result)
    assert "could not start" in line
    assert "allkeys-lru" in line
    assert "child_exited" not in result.stdout + result.stderr  # none was restarted


def test_up_stops_at_once_when_the_catalogue_does_not_import(
    app_dir: Path, app_env: dict[str, str]
) -> None:
    elsewhere = app_dir.parent / "elsewhere"
    elsewhere.mkdir()
    result = conveyor("up", "--no-api", "--no-monitor", cwd=elsewhere, env=app_env)
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "cannot import 'myapp.tasks'" in line
