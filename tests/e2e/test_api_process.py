"""``conveyor api`` as a real process: uvicorn on a real port, real HTTP, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync

pytestmark = pytest.mark.e2e

CONVEYOR = str(Path(sys.executable).parent / "conveyor")
REPO = Path(__file__).resolve().parents[2]
Serve = Callable[..., tuple[str, "subprocess.Popen[bytes]"]]


def _env(settings: Settings, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_QUEUE": settings.queue,
        "CONVEYOR_PREFIX": settings.prefix,
        "CONVEYOR_TASKS": "tests.support.api",
        "CONVEYOR_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    }


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    """What the process (and its worker processes) wrote to stderr so far."""
    return Path(proc.stderr_path).read_text()  # type: ignore[attr-defined]


def _ready(base: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, _stderr(proc)
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def serve(settings: Settings, redis_url: str, tmp_path: Path) -> Iterator[Serve]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        # A file, not a pipe: the test reads what the processes logged while they run.
        stderr_path = tmp_path / f"api-{len(started)}.stderr"
        with stderr_path.open("ab") as stderr:
            proc = subprocess.Popen(
                [CONVEYOR, "api", "--host", "127.0.0.1", "--port", str(port), *args],
                env=_env(settings, redis_url, **env),
                stderr=stderr,
                cwd=REPO,
                start_new_session=True,
            )
        proc.stderr_path = stderr_path  # type: ignore[attr-defined]
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        # Start-up imports FastAPI, pydantic and the tasks: well over 10 s on a loaded machine.
        wait_for_sync(lambda: _ready(base, proc), timeout=60)
        return base, proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serves_enqueue_over_http_and_stops_cleanly_on_sigterm(serve: Serve) -> None:
    base, proc = serve()
    with httpx.Client(base_url=base, timeout=10) as http:
        accepted = http.post("/enqueue", json={"name": "echo", "data": {"value": "hi"}})
        assert accepted.status_code == 201
        assert accepted.headers["location"] == f"/jobs/{accepted.json()['id']}"
        status = http.get(accepted.headers["location"])
        assert status.json()["state"] == "waiting"
        assert status.json()["data"] == {"value": "hi"}
        bad = http.post("/enqueue", json={"name": "send_email", "data": {}})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        assert http.get("/openapi.json").json()["info"]["title"] == "Conveyor API"
        assert "server" not in accepted.headers
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.wait(timeout=60) == 0
    events = _events(proc)
    assert "api_ready" in events
    assert "api_stopped" in events


def test_several_worker_processes_share_the_port_and_the_settings(
    serve: Serve, settings: Settings
) -> None:
    base, proc = serve("--workers", "2", CONVEYOR_API_KEYS="k-1")
    # /readyz answered from one worker process; the other may still be importing, and a
    # SIGTERM then ends it before it has a handler (no api_stopped). Both must be serving.
    wait_for_sync(
        lambda: _events(proc).count("api_ready") == 2,
        timeout=60,
        message="the second worker process never became ready",
    )
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post("/enqueue", json={"name": "echo"}).status_code == 401
        headers = {"Authorization": "Bearer k-1"}
        ids = {
            http.post("/enqueue", json={"name": "echo"}, headers=headers).json()["id"]
            for _ in range(20)
        }
        assert len(ids) == 20
        queue = http.get(f"/queues/{settings.queue}", headers=headers).json()
        assert queue["counts"]["waiting"] == 20
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert _events(proc).count("api_stopped") == 2


def test_unreachable_redis_ends_the_command_with_one_line(
    tmp_path: Path, settings: Settings
) -> None:
    gone = RedisServer(tmp_path / "gone").start()
    gone.stop()
    result = subprocess.run(
        [CONVEYOR, "api", "--port", str(free_port())],
        env=_env(settings, gone.url, CONVEYOR_REDIS_WAIT_S="0.5"),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,  # start-up imports alone took more than 30 s at load 13
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("conveyor: error: Redis at redis://127.0.0.1:")
    assert "Traceback" not in result.stderr


def _events(proc: subprocess.Popen[bytes]) -> list[str]:
    """The event names of the JSON log lines the process wrote to stderr."""
    lines = _stderr(proc).split("\n")[:-1]  # whole lines only: the processes may be writing
    return [json.loads(line)["event"] for line in lines if line.startswith("{")]


def test_on_its_own_embedded_redis_sigterm_stops_the_redis_too(
    serve: Serve, tmp_path: Path
) -> None:
    """uvicorn re-raised the SIGTERM it had handled, which killed the process before it could
    stop the embedded Redis it started; that Redis then ran on, orphaned."""
    from conveyor.embedded import ping

    base, proc = serve(CONVEYOR_REDIS_URL="", CONVEYOR_DATA_DIR=str(tmp_path))
    port = int((tmp_path / "redis" / "port").read_text())
    assert ping(port)
    assert (
        httpx.post(f"{base}/enqueue", json={"name": "echo", "data": {"value": "x"}}).status_code
        == 201
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert wait_for_sync(lambda: not ping(port), timeout=10)
