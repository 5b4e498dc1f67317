"""``conveyor cleanup`` as a user runs it: real processes against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from typer.testing import CliRunner

from conveyor.cli import app
from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.errors import Unrecoverable
from conveyor.jobs import JobState
from conveyor.maintenance import CleanupKeys, read_runs
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker


class Empty(BaseModel):
    pass


@pytest.fixture
def failed_prefix(prefix: str) -> str:
    return f"{prefix}-failedJobs"


@pytest.fixture
def env(settings: Settings, failed_prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_REDIS_URL": str(settings.redis_url),
        "CONVEYOR_QUEUE": settings.queue,
        "CONVEYOR_PREFIX": settings.prefix,
        "CONVEYOR_FAILED_KEY_PREFIX": failed_prefix,
        "CONVEYOR_LOG_FORMAT": "json",
    }


@pytest.fixture
async def failed_ids(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    failed_prefix: str,
) -> list[str]:
    registry = TaskRegistry()

    @registry.task("boom")
    async def boom(payload: Empty, ctx: JobContext) -> None:
        raise Unrecoverable("no")

    client = make_client(failed_key_prefix=failed_prefix)
    make_worker(registry, failed_key_prefix=failed_prefix)
    ids = await client.enqueue_many([JobSpec("boom", {})] * 4)

    async def all_failed() -> bool:
        return (await client.counts())[JobState.FAILED] == 4 and all(
            [await client.failure_record(j) for j in ids]
        )

    await wait_for(all_failed, message="4 failures recorded")
    return ids


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conveyor.cli", "cleanup", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_once_dry_run_then_once(
    redis: Redis, settings: Settings, env: dict[str, str], failed_ids: list[str]
) -> None:
    code, out, err = await cli(env, "--once", "--older-than", "0s", "--dry-run")
    assert code == 0, err
    assert f"would remove 4 failed jobs and 4 failure records from {settings.queue!r}" in out
    assert "older than 0s" in out
    assert all(job_id in out for job_id in failed_ids)  # the dry run names what would go
    assert await redis.zcard(f"{settings.prefix}:{settings.queue}:failed") == 4

    code, out, err = await cli(env, "--once", "--older-than", "0")
    assert code == 0, err
    assert "removed 4 failed jobs and 4 failure records" in out
    assert await redis.zcard(f"{settings.prefix}:{settings.queue}:failed") == 0
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "cleanup_finished" in events

    runs = await read_runs(redis, CleanupKeys.for_queue(settings.prefix, settings.queue))
    assert [(r.dry_run, r.failed_jobs_removed) for r in runs] == [(False, 4), (True, 4)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dry-run"], "--dry-run only works with --once"),
        (["--once", "--older-than", "a week"], "invalid duration 'a week'"),
        (["--once", "--completed-older-than", "-1d"], "invalid duration '-1d'"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    """Refused before anything connects to Redis."""
    result = CliRunner().invoke(app, ["cleanup", *args])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"conveyor: error: {message}")


async def _collect(stream: asyncio.StreamReader | None, into: list[dict[str, object]]) -> None:
    assert stream is not None
    async for line in stream:
        if line.startswith(b"{"):
            into.append(json.loads(line))


async def test_two_cleanup_services_run_once_between_them(
    redis: Redis, settings: Settings, env: dict[str, str], failed_ids: list[str]
) -> None:
    """Two `conveyor cleanup` processes start together; the first run is due at once (it never
    ran); exactly one of them does it, the other sees it done, and both stop on SIGTERM."""
    env = {**env, "CONVEYOR_FAILED_RETENTION_S": "0"}
    keys = CleanupKeys.for_queue(settings.prefix, settings.queue)
    services = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor.cli",
            "cleanup",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    logs: list[list[dict[str, object]]] = [[], []]
    readers = [
        asyncio.create_task(_collect(s.stderr, lg)) for s, lg in zip(services, logs, strict=True)
    ]

    def scheduled(log: list[dict[str, object]]) -> bool:
        return any(doc["event"] == "cleanup_scheduled" for doc in log)

    try:
        # Each service says when the next run is due once it has looked at the schedule.
        await wait_for(lambda: all(scheduled(log) for log in logs), timeout=30)
        runs = await read_runs(redis, keys)
        assert len(runs) == 1
        assert runs[0].trigger == "schedule"
        assert runs[0].failed_jobs_removed == 4
    finally:
        for service in services:
            service.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(s.wait(), 30) for s in services]
        await asyncio.gather(*readers)
    assert codes == [0, 0]
    finished = [doc for log in logs for doc in log if doc["event"] == "cleanup_finished"]
    assert len(finished) == 1
    next_runs = {
        doc["next_run"] for log in logs for doc in log if doc["event"] == "cleanup_scheduled"
    }
    assert len(next_runs) == 1  # both wait for the same next run, a day after this one
