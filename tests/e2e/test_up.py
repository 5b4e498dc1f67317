"""``conveyor up`` with real processes: the supervisor on small stand-in children, then the
whole system (embedded Redis, API, workers, monitor, cleanup, demo producer) as a user runs it.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from conveyor.embedded import ping
from conveyor.ports import free_port
from conveyor.redis import connect
from conveyor.services.up import SIGNAL_ECHO_S, ChildSpec, Stage, Supervisor
from conveyor.testing import wait_for

pytestmark = pytest.mark.e2e

#: A stand-in child: says it is ready, and on SIGTERM says it is stopping and exits 0.
#: ``crash`` exits 3 at once, ``done`` exits 0 at once, ``stubborn`` ignores SIGTERM.
CHILD = textwrap.dedent(
    """
    import signal, sys, time
    name = sys.argv[1]
    if name.startswith("crash"):
        sys.exit(3)
    if name.startswith("done"):
        sys.exit(0)
    def stop(*_):
        print("stopping", name, flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if name.startswith("stubborn") else stop)
    print("ready", name, flush=True)
    while True:
        time.sleep(0.05)
    """
)


def spec(name: str, stage: Stage, **options: object) -> ChildSpec:
    return ChildSpec(name, (name,), stage, **options)  # type: ignore[arg-type]


def supervisor(*specs: ChildSpec) -> tuple[Supervisor, io.StringIO]:
    out = io.StringIO()
    return Supervisor(specs, dict(os.environ), out=out, cli=(sys.executable, "-c", CHILD)), out


def lines_of(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


async def test_children_stop_in_order_intake_workers_support() -> None:
    sup, out = supervisor(
        spec("support", Stage.SUPPORT),
        spec("work-a", Stage.WORKERS),
        spec("intake", Stage.INTAKE),
        spec("work-b", Stage.WORKERS),
    )
    running = asyncio.create_task(sup.run())
    await wait_for(lambda: sum("| ready" in line for line in lines_of(out)) == 4, timeout=60)
    sup.request_stop()
    await asyncio.wait_for(running, 30)

    stopping = [line.split("stopping ")[1] for line in lines_of(out) if "| stopping" in line]
    assert stopping[0] == "intake"
    assert sorted(stopping[1:3]) == ["work-a", "work-b"]
    assert stopping[3] == "support"
    for child in sup.children:
        assert child.process is not None
        assert child.process.returncode == 0
        assert not psutil.pid_exists(child.process.pid)


async def test_a_crashing_child_is_restarted_with_backoff_a_finished_one_is_not() -> None:
    sup, _ = supervisor(
        spec("crash", Stage.WORKERS),
        spec("done", Stage.INTAKE, restart="on-failure"),
        spec("steady", Stage.SUPPORT),
    )
    crash, done, steady = sup.children
    running = asyncio.create_task(sup.run())
    await wait_for(lambda: crash.starts >= 3, timeout=30, message="crash restarted twice")
    sup.request_stop()
    await asyncio.wait_for(running, 30)
    assert done.starts == 1  # exited 0 with restart=on-failure: finished, not crashed
    assert steady.starts == 1


async def test_a_child_that_ignores_sigterm_is_killed_after_its_timeout() -> None:
    sup, _ = supervisor(spec("stubborn", Stage.WORKERS, stop_timeout_s=0.5))
    running = asyncio.create_task(sup.run())
    await wait_for(lambda: _ready(sup), timeout=60)
    sup.request_stop()
    await asyncio.wait_for(running, 30)
    assert sup.children[0].process is not None
    assert sup.children[0].process.returncode == -signal.SIGKILL


async def test_a_second_stop_request_kills_at_once() -> None:
    sup, _ = supervisor(spec("stubborn", Stage.WORKERS, stop_timeout_s=600))
    running = asyncio.create_task(sup.run())
    await wait_for(lambda: _ready(sup), timeout=60)
    sup.request_stop()
    await wait_for(lambda: sup.stopping is Stage.WORKERS)  # SIGTERM sent, and ignored
    sup.request_stop()  # the same Ctrl-C, echoed by `uv run`/`make`: not a second one
    await asyncio.sleep(SIGNAL_ECHO_S)  # a negative needs a window: nothing is killed yet
    assert sup.children[0].process is not None
    assert sup.children[0].process.returncode is None
    sup.request_stop()  # the impatient second Ctrl-C
    await asyncio.wait_for(running, 30)
    assert sup.children[0].process.returncode == -signal.SIGKILL


def _ready(sup: Supervisor) -> bool:
    process = sup.children[0].process
    if process is None:
        return False
    # The stand-in prints "ready" only after installing its SIGTERM handler.
    assert isinstance(sup.out, io.StringIO)
    return "| ready" in sup.out.getvalue()


# --- the whole system ------------------------------------------------------------------------


class Output:
    """Collects an `up` process's merged output line by line while it runs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    async def collect(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def find(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        return [m for line in self.lines if (m := regex.search(line))]

    def index(self, pattern: str) -> int:
        regex = re.compile(pattern)
        for i, line in enumerate(self.lines):
            if regex.search(line):
                return i
        raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(self.lines[-60:]))


@pytest.fixture
async def up(
    tmp_path: Path,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Output, dict[str, int]]]:
    ports = {"api": free_port(), "monitor": free_port()}
    env = {
        **os.environ,
        "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
        "CONVEYOR_SHUTDOWN_GRACE_S": "5",
        "CONVEYOR_REDIS_URL": "",  # the embedded Redis
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor.cli", "up", "--demo", "--workers", "2",
        "--api-port", str(ports["api"]), "--monitor-port", str(ports["monitor"]),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = Output()
    reader = asyncio.create_task(output.collect(process.stdout))
    try:
        yield process, output, ports
    finally:
        if process.returncode is None:
            left = psutil.Process(process.pid).children(recursive=True)
            process.send_signal(signal.SIGKILL)
            for child in left:
                child.kill()
            await process.wait()
        await asyncio.wait_for(reader, 10)


async def test_up_runs_the_whole_system_restarts_crashes_and_stops_in_order(
    up: tuple[asyncio.subprocess.Process, Output, dict[str, int]],
) -> None:
    process, out, ports = up
    # Jobs visibly flow: completed, retried (and, given time, failed for good).
    await wait_for(lambda: out.find(r"^worker-\d +\| .*job_completed"), timeout=90,
                   message="a job_completed line")  # fmt: skip
    await wait_for(lambda: out.find(r"^worker-\d +\| .*job_retrying"), timeout=60,
                   message="a job_retrying line")  # fmt: skip
    redis_url = out.find(r"redis +(redis://\S+)")[0].group(1)
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])

    # The API and the monitor answer on the printed URLs.
    await wait_for(lambda: out.find(r"child_ready name=monitor"), timeout=60)
    await wait_for(lambda: out.find(r"child_ready name=api"), timeout=60)
    async with httpx.AsyncClient(timeout=10) as http:
        for name in ("api", "monitor"):
            assert f"http://127.0.0.1:{ports[name]}" in "\n".join(out.lines[:12])
            response = await http.get(f"http://127.0.0.1:{ports[name]}/healthz")
            assert response.status_code == 200, name

    # The workers share the one Redis that `up` started.
    redis = connect(redis_url)
    try:
        assert await redis.zcard("bull:demoQueue:completed") >= 1
    finally:
        await redis.aclose()

    # A worker that dies is started again.
    pid = int(out.find(r"child_started name=worker-1 pid=(\d+) start=1")[0].group(1))
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: out.find(r"child_exited name=worker-1 .*exit=SIGKILL"), timeout=30)
    await wait_for(lambda: out.find(r"child_started name=worker-1 pid=\d+ start=2"), timeout=30)
    await wait_for(lambda: len(out.find(r"^worker-1 +\| .*worker_started")) == 2, timeout=60)

    pids = [int(m.group(1)) for m in out.find(r"child_started name=\S+ pid=(\d+)")]
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 60) == 0

    # Intake first, then the workers (draining), then monitor and cleanup, then Redis.
    intake = max(out.index(r"child_stopped name=api"), out.index(r"child_stopped name=producer"))
    workers = [out.index(rf"child_stopped name=worker-{i}") for i in (1, 2)]
    support = [out.index(r"child_stopped name=monitor"), out.index(r"child_stopped name=cleanup")]
    redis_stopped = out.index(r"embedded_redis_stopped")
    assert intake < min(workers)
    assert max(workers) < min(support)
    assert max(support) < redis_stopped
    assert out.find(r"child_stopped name=worker-\d exit=0")  # drained, not killed
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in pids)  # fmt: skip
    assert not ping(redis_port)
