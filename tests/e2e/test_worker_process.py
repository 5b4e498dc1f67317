"""Real worker processes: exclusive locks, stalled recovery after SIGKILL, graceful SIGTERM,
and one-line errors for a broken setting or an unreachable Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.embedded import running_url
from conveyor.jobs import JobState
from conveyor.registry import load_registry
from conveyor.testing import wait_for
from tests.e2e.conftest import output_of, run_cli

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def client(redis: Redis, settings: Settings) -> QueueClient:
    return QueueClient(
        redis,
        queue=settings.queue,
        prefix=settings.prefix,
        registry=load_registry(["tests.support.tasks"]),
        pipelined=False,
    )


async def test_two_worker_processes_never_run_a_job_twice(
    spawn: Spawn, client: QueueClient, redis: Redis, settings: Settings
) -> None:
    key = f"{settings.prefix}:executions"
    count = 3000
    ids: list[str] = []
    for _start in range(0, count, 500):
        ids += await client.enqueue_many([JobSpec("count", {"key": key})] * 500)
    proc = spawn("worker", "--processes", "2", "--concurrency", "20")

    async def all_completed() -> bool:
        # The jobs' state, not the handlers' last write (":done" comes just before each
        # job is marked completed).
        return (await client.counts())[JobState.COMPLETED] == count

    await wait_for(all_completed, timeout=90, message="not every job completed")
    executions = await redis.hgetall(key)
    assert len(executions) == count
    twice = {job_id: n for job_id, n in executions.items() if n != "1"}
    assert twice == {}
    # Both processes took part.
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    log = output_of(proc)
    pids = {
        line.split("worker=")[1].split(":")[1]
        for line in log.splitlines()
        if "worker_started" in line
    }
    assert len(pids) == 2, log[-2000:]


async def test_sigkilled_worker_job_is_recovered_by_another(
    spawn: Spawn, client: QueueClient, redis: Redis, settings: Settings
) -> None:
    key = f"{settings.prefix}:executions"
    fast_recovery = {"CONVEYOR_LOCK_DURATION_MS": "1000", "CONVEYOR_STALLED_INTERVAL_MS": "1000"}
    victim = spawn("worker", "--concurrency", "1", env=fast_recovery)
    job_id = await client.enqueue("count", {"key": key, "sleep_ms": 3000})

    async def started() -> bool:
        return await redis.hget(key, job_id) == "1"

    await wait_for(started, timeout=30)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    rescuer = spawn("worker", env=fast_recovery)

    async def completed() -> bool:
        return (await client.get_state(job_id)) is JobState.COMPLETED

    await wait_for(completed, timeout=30, message=output_of(rescuer)[-2000:])
    assert await redis.hget(key, job_id) == "2"  # started twice: at-least-once
    assert await redis.hget(key + ":done", job_id) == "1"  # finished once, by the rescuer
    assert "stalled_jobs_recovered" in output_of(rescuer)
    assert await client.failure_record(job_id) is None


async def test_a_task_raising_systemexit_or_keyboardinterrupt_does_not_end_the_process(
    spawn: Spawn, client: QueueClient, redis: Redis, settings: Settings
) -> None:
    """Each is one failed attempt with its error recorded; the same process then runs the
    next job, and still stops with exit 0 on SIGTERM."""
    proc = spawn("worker", "--concurrency", "2")
    exiting = await client.enqueue("exit_process", {})
    interrupting = await client.enqueue("sync_interrupt", {})
    for job_id, error in ((exiting, "SystemExit: 3"), (interrupting, "KeyboardInterrupt")):

        async def failed(job_id: str = job_id) -> bool:
            return (await client.get_state(job_id)) is JobState.FAILED

        await wait_for(failed, timeout=30, message=output_of(proc)[-2000:])
        view = await client.get_job(job_id)
        assert (view.info.failed_reason, view.info.attempts_made) == (error, 1)
        record = await client.failure_record(job_id)
        assert record is not None
        assert record["error"] == error
    key = f"{settings.prefix}:executions"
    after = await client.enqueue("count", {"key": key})

    async def completed() -> bool:
        return (await client.get_state(after)) is JobState.COMPLETED

    await wait_for(completed, timeout=30, message=output_of(proc)[-2000:])
    assert proc.poll() is None
    assert output_of(proc).count("worker_started") == 1  # never restarted
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0


async def test_sigterm_lets_the_running_job_finish_and_exits_zero(
    spawn: Spawn, client: QueueClient, redis: Redis, settings: Settings
) -> None:
    key = f"{settings.prefix}:executions"
    proc = spawn("worker")
    job_id = await client.enqueue("count", {"key": key, "sleep_ms": 2000})

    async def started() -> bool:
        return await redis.hget(key, job_id) == "1"

    await wait_for(started, timeout=30)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    assert time.monotonic() - sent < 10
    view = await client.get_job(job_id)
    assert view.state is JobState.COMPLETED
    assert await redis.hget(key + ":done", job_id) == "1"
    log = output_of(proc)
    assert "job_completed" in log
    assert "worker_stopped" in log


def test_sigterm_to_the_supervisor_stops_every_process(spawn: Spawn) -> None:
    proc = spawn("worker", "--processes", "2")
    deadline = time.monotonic() + 60  # both processes import everything first
    while output_of(proc).count("worker_started") < 2:
        assert time.monotonic() < deadline, output_of(proc)
        assert proc.poll() is None, output_of(proc)
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert output_of(proc).count("worker_stopped") == 2


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"CONVEYOR_REDIS_URL": "redis://127.0.0.1:1/0", "CONVEYOR_REDIS_WAIT_S": "0.5"},
            "did not answer within 0.5 s",
        ),
        (
            {"CONVEYOR_REDIS_URL": "redis://localhost:notaport/0"},
            "the port 'notaport' is not a number",
        ),
        ({"CONVEYOR_REDIS_URL": "http://localhost"}, "CONVEYOR_REDIS_URL"),
        ({"CONVEYOR_CONCURRENCY": "many"}, "CONVEYOR_CONCURRENCY"),
        ({"CONVEYOR_TASKS": "no.such.module"}, "cannot import 'no.such.module'"),
    ],
)
def test_broken_setup_is_one_readable_line(
    service_env: dict[str, str], env: dict[str, str], fragment: str
) -> None:
    result = run_cli("worker", env={**service_env, **env}, timeout=30)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("conveyor: error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0]
    assert "Traceback" not in result.stderr


def test_password_is_not_echoed_in_errors(service_env: dict[str, str]) -> None:
    env = {
        **service_env,
        "CONVEYOR_REDIS_URL": "redis://user:s3cret@127.0.0.1:1/0",
        "CONVEYOR_REDIS_WAIT_S": "0.2",
    }
    result = run_cli("worker", env=env, timeout=30)
    assert result.returncode == 1
    assert "s3cret" not in result.stderr + result.stdout
    assert "***" in result.stderr


async def test_producer_enqueues_with_a_summary(
    service_env: dict[str, str], client: QueueClient
) -> None:
    result = run_cli(
        "produce", "-n", "25", "--rate", "0", "--fail-rate", "0.2", "--quiet", env=service_env
    )
    assert result.returncode == 0, result.stderr
    assert "enqueued 25 simulate jobs" in result.stdout
    assert (await client.counts())[JobState.WAITING] == 25


def test_embedded_redis_is_started_and_stopped(service_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in service_env.items() if k != "CONVEYOR_REDIS_URL"}
    env["CONVEYOR_DATA_DIR"] = str(tmp_path / "data")
    result = run_cli("produce", "-n", "3", "--rate", "0", "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert "embedded_redis_started" in result.stderr
    assert "embedded_redis_stopped" in result.stderr
    aof = list((tmp_path / "data" / "redis").glob("appendonly*"))
    assert aof, "AOF is on: the jobs are on disk"
    assert running_url(tmp_path / "data") is None
