"""`conveyor worker --processes 2` with CONVEYOR_QUEUES: every process serves every queue, each
queue's jobs run exactly once, and SIGTERM stops them all with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import load_registry
from conveyor.testing import wait_for
from tests.e2e.conftest import output_of

Spawn = Callable[..., subprocess.Popen[str]]


async def test_processes_share_several_queues(
    spawn: Spawn, redis: Redis, settings: Settings
) -> None:
    names = [f"{settings.queue}-a", f"{settings.queue}-b"]
    registry = load_registry(["tests.support.tasks"])
    clients = [
        QueueClient(redis, queue=name, prefix=settings.prefix, registry=registry, pipelined=False)
        for name in names
    ]
    key = f"{settings.prefix}:executions"
    count = 200
    proc = spawn(
        "worker",
        "--processes",
        "2",
        "--concurrency",
        "10",
        env={"CONVEYOR_QUEUES": f"{names[0]}:2,{names[1]}", "CONVEYOR_QUEUE": names[0]},
    )

    def started() -> list[str]:
        return [line for line in output_of(proc).splitlines() if "worker_started" in line]

    # Both processes must be serving before the jobs arrive: on a loaded machine the first
    # process alone could otherwise run all 400 before the second has imported its tasks.
    await wait_for(lambda: len(started()) == 4, timeout=60, message="not every process started")
    ids = [await c.enqueue_many([JobSpec("count", {"key": key})] * count) for c in clients]

    async def all_completed() -> bool:
        # The jobs' state, not the handlers' last write: a handler writes ":done" before it
        # returns and its job is marked completed just after (a loaded full run saw 198).
        return all([(await c.counts())[JobState.COMPLETED] == count for c in clients])

    await wait_for(all_completed, timeout=60, message="not every job of both queues completed")
    executions = await redis.hgetall(key)
    assert set(executions) == set(ids[0]) | set(ids[1])
    assert set(executions.values()) == {"1"}  # none ran twice
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    lines = started()
    # Two processes, each with a worker per queue.
    assert len(lines) == 4, lines
    for name in names:
        assert len([line for line in lines if f"queue={name} " in line]) == 2, lines
