"""Conveyor's API and monitor, run as real processes, beside Node.js BullMQ.

The services start once for this module, on a queue and prefix of their own (the ``queue_name``
and ``prefix`` fixtures are overridden here, so ``settings``, ``node`` and ``node_worker``
follow them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.jobs import JobState
from conveyor.ports import free_port
from conveyor.registry import TaskRegistry
from conveyor.testing import wait_for, wait_for_sync
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall, NodeWorker
from tests.interop.helpers import UNICODE, node_jobs, settled

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 45  # importing FastAPI and uvicorn on a busy 2-core machine takes a while

StartNodeWorker = Callable[..., Awaitable[NodeWorker]]


@pytest.fixture(scope="module")
def names() -> tuple[str, str]:
    return f"q-{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def queue_name(names: tuple[str, str]) -> str:
    return names[0]


@pytest.fixture
def prefix(names: tuple[str, str]) -> str:
    return names[1]


@pytest.fixture(scope="module")
def services(
    redis_url: str, names: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """``conveyor api`` and ``conveyor monitor`` as processes; answers their base URLs."""
    queue, prefix = names
    folder = tmp_path_factory.mktemp("services")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CONVEYOR_REDIS_URL": redis_url,
            "CONVEYOR_QUEUE": queue,
            "CONVEYOR_PREFIX": prefix,
            "CONVEYOR_TASKS": "tests.interop.tasks",
            "CONVEYOR_DATA_DIR": str(folder / "data"),
            "CONVEYOR_BACKOFF_DELAY_MS": "20",
        }
    )
    urls, procs = {}, []
    for service in ("api", "monitor"):
        port = free_port()
        log = open(folder / f"{service}.log", "w+")  # noqa: SIM115 (closed below)
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "conveyor.cli", service, "--port", str(port)],
                    env=env,
                    cwd=folder,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        )
        urls[service] = f"http://127.0.0.1:{port}"
    try:
        for (proc, log), url in zip(procs, urls.values(), strict=True):
            wait_for_sync(
                lambda proc=proc, url=url, log=log: _ready(proc, url, log),  # type: ignore[misc]
                timeout=START_TIMEOUT_S,
                message=f"{url} never answered /readyz",
            )
        yield urls
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()


def _ready(proc: subprocess.Popen[bytes], url: str, log: IO[str]) -> bool:
    if proc.poll() is not None:
        log.seek(0)
        raise AssertionError(f"the service behind {url} exited ({proc.returncode}):\n{log.read()}")
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_a_job_posted_to_the_api_runs_on_node_and_the_api_shows_its_result(
    services: dict[str, str],
    http: httpx.AsyncClient,
    node: NodeCall,
    node_worker: StartNodeWorker,
    make_client: Callable[..., QueueClient],
) -> None:
    api = services["api"]
    options = {
        "priority": 7,
        "attempts": 3,
        "backoff": {"type": "exponential", "delay": 50},
        "jobId": "api-job-ü-1",
        "removeOnComplete": False,
    }
    posted = await http.post(
        f"{api}/enqueue", json={"name": "flaky", "data": {"succeed_on": 2}, "options": options}
    )
    assert posted.status_code == 201, posted.text
    job_id = posted.json()["id"]
    assert job_id == "api-job-ü-1"
    plain = (await http.post(f"{api}/enqueue", json={"name": "echo", "data": UNICODE})).json()
    later = (
        await http.post(f"{api}/enqueue", json={"name": "echo", "options": {"delay": 400}})
    ).json()
    gone = (
        await http.post(
            f"{api}/enqueue", json={"name": "echo", "options": {"removeOnComplete": True}}
        )
    ).json()

    seen = await node_jobs(node, job_id, plain["id"], later["id"])
    assert seen[job_id]["opts"]["priority"] == 7
    assert seen[job_id]["opts"]["attempts"] == 3
    assert seen[job_id]["opts"]["backoff"] == {"type": "exponential", "delay": 50}
    assert seen[job_id]["state"] == "prioritized"
    assert seen[plain["id"]]["opts"]["attempts"] == 6  # the API writes Conveyor's defaults
    assert seen[later["id"]]["state"] == "delayed"
    delayed = (await http.get(f"{api}/jobs/{later['id']}")).json()
    assert (delayed["state"], delayed["delay_ms"]) == ("delayed", 400)

    worker = await node_worker()
    client = make_client()
    for done in (job_id, plain["id"], later["id"]):
        await settled(client, done, JobState.COMPLETED)
    await worker.wait("completed", gone["id"])

    status = (await http.get(f"{api}/jobs/{job_id}")).json()
    assert status["state"] == "completed"
    assert status["result"] == {"attempt": 2, "by": "node"}
    assert status["attempts_made"] == 2
    assert status["max_attempts"] == 3
    assert status["priority"] == 7
    assert status["stacktrace"]  # the failed first attempt, as Node recorded it
    echoed = (await http.get(f"{api}/jobs/{plain['id']}")).json()
    assert echoed["result"] == {"echo": UNICODE, "attempt": 1, "by": "node"}
    ran = (await http.get(f"{api}/jobs/{later['id']}")).json()
    assert ran["options"]["delay"] == 400
    assert ran["started_at"] is not None
    assert (await http.get(f"{api}/jobs/{gone['id']}")).status_code == 404  # removeOnComplete


async def test_the_api_shows_jobs_that_node_added_and_conveyor_ran(
    services: dict[str, str],
    http: httpx.AsyncClient,
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    api = services["api"]
    ok, doomed = (
        await node(
            "add",
            [
                {"name": "echo", "data": UNICODE},
                {"name": "fail", "data": {}, "opts": {"attempts": 2, "backoff": 10}},
            ],
        )
    )["ids"]
    waiting = (await http.get(f"{api}/jobs/{ok}")).json()
    assert (waiting["state"], waiting["name"], waiting["data"]) == ("waiting", "echo", UNICODE)

    make_worker(registry)
    client = make_client(registry)
    await settled(client, ok, JobState.COMPLETED)
    await settled(client, doomed, JobState.FAILED)
    done = (await http.get(f"{api}/jobs/{ok}")).json()
    assert done["result"] == {"echo": UNICODE, "attempt": 1, "by": "conveyor"}
    failed = (await http.get(f"{api}/jobs/{doomed}")).json()
    assert failed["state"] == "failed"
    assert failed["attempts_made"] == 2
    assert failed["failed_reason"] == "InteropFailure: conveyor failure on attempt 2"


async def test_the_api_keeps_integers_beyond_2_pow_53_exact(
    services: dict[str, str], http: httpx.AsyncClient, node: NodeCall
) -> None:
    big = 2**53 + 1
    posted = await http.post(
        f"{services['api']}/enqueue", json={"name": "echo", "data": {"n": big}}
    )
    assert posted.status_code == 201, posted.text
    job_id = posted.json()["id"]
    assert (await http.get(f"{services['api']}/jobs/{job_id}")).json()["data"] == {"n": big}
    assert (await node_jobs(node, job_id))[job_id]["data"] == {"n": 2**53}  # Node rounds


async def test_the_monitor_shows_node_jobs_node_workers_and_counter_id_failures(
    services: dict[str, str],
    http: httpx.AsyncClient,
    node: NodeCall,
    node_worker: StartNodeWorker,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Any,
) -> None:
    monitor, queue = services["monitor"], settings.queue
    [doomed] = (
        await node("add", [{"name": "fail", "data": {"why": "ü"}, "opts": {"attempts": 1}}])
    )["ids"]
    conveyor_worker = make_worker(registry)
    client = make_client(registry)
    await settled(client, doomed, JobState.FAILED)
    conveyor_worker.stop()
    await wait_for(lambda: not conveyor_worker.running, message="worker never stopped")

    waiting_ids = (
        await node(
            "add",
            [
                {"name": "echo", "data": {"i": 1}},
                {"name": "echo", "data": {"i": 2}, "opts": {"priority": 4}},
            ],
        )
    )["ids"]

    detail = (await http.get(f"{monitor}/api/queues/{queue}/jobs/{doomed}")).json()
    assert detail["state"] == "failed"
    assert detail["data"] == {"why": "ü"}
    record = detail["failure_record"]
    assert record["job_id"] == doomed
    assert record["queue"] == queue
    assert record["error"] == "InteropFailure: conveyor failure on attempt 1"

    waiting = (
        await http.get(f"{monitor}/api/queues/{queue}/jobs", params={"state": "waiting"})
    ).json()
    assert waiting_ids[0] in [row["id"] for row in waiting["jobs"]]
    prioritized = (
        await http.get(f"{monitor}/api/queues/{queue}/jobs", params={"state": "prioritized"})
    ).json()
    assert [(r["id"], r["priority"]) for r in prioritized["jobs"]] == [(waiting_ids[1], 4)]

    worker = await node_worker(name="node-dashboard-check")
    listed = (await http.get(f"{monitor}/api/workers", params={"queue": queue})).json()
    assert "node-dashboard-check" in [w["name"] for w in listed["workers"]]
    await settled(client, waiting_ids[1], JobState.COMPLETED)
    assert await worker.wait("completed", waiting_ids[0])
