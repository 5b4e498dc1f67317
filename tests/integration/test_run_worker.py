"""conveyor.run_worker: a worker inside an application's own event loop, against a real Redis.

It runs jobs until cancelled or signalled, and stops as ``conveyor worker`` does: active jobs
finish within the grace period, and those still running after it are handed back, unfailed."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

import pytest
from pydantic import BaseModel

import conveyor
from conveyor import ConfigurationError, JobContext, QueueClient, Settings, TaskRegistry
from conveyor.jobs import JobState
from conveyor.testing import wait_for, wait_for_state


class Item(BaseModel):
    n: int = 0


class Gate:
    """Lets a test hold a handler until it says so, and know when it started."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def registry(gate: Gate) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("double")
    async def double(payload: Item, ctx: JobContext) -> int:
        return payload.n * 2

    @registry.task("held")
    async def held(payload: Item, ctx: JobContext) -> str:
        gate.started.set()
        await gate.release.wait()
        return "released"

    return registry


async def test_runs_jobs_and_a_cancellation_lets_the_active_one_finish(
    registry: TaskRegistry,
    settings: Settings,
    gate: Gate,
    make_client: Callable[..., QueueClient],
) -> None:
    client = make_client(registry)
    running = asyncio.create_task(conveyor.run_worker(registry, settings, handle_signals=False))
    done = await wait_for_state(
        client, await client.enqueue("double", {"n": 21}), JobState.COMPLETED
    )
    assert done.info.return_value == 42

    held = await client.enqueue("held", {})
    await asyncio.wait_for(gate.started.wait(), 10)
    running.cancel()
    waiting = await client.enqueue("double", {"n": 1})  # after the cancel: not taken
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 15)

    finished = await client.get_job(held)
    assert finished.state is JobState.COMPLETED
    assert finished.info.return_value == "released"
    assert (await client.get_job(waiting)).state is JobState.WAITING


async def test_a_job_still_running_after_the_grace_period_is_handed_back(
    registry: TaskRegistry,
    settings: Settings,
    gate: Gate,
    make_client: Callable[..., QueueClient],
) -> None:
    client = make_client(registry)
    settings = settings.model_copy(update={"shutdown_grace_s": 0.1})
    running = asyncio.create_task(conveyor.run_worker(registry, settings, handle_signals=False))
    held = await client.enqueue("held", {})
    await asyncio.wait_for(gate.started.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 15)

    view = await client.get_job(held)
    assert view.state is JobState.WAITING  # back in the queue, not failed
    assert view.info.attempts_made == 0


async def test_queue_and_concurrency_override_the_settings(
    registry: TaskRegistry,
    settings: Settings,
    make_client: Callable[..., QueueClient],
) -> None:
    other = f"{settings.queue}-other"
    client = make_client(registry, queue=other)
    running = asyncio.create_task(
        conveyor.run_worker(registry, settings, queue=other, concurrency=2, handle_signals=False)
    )
    try:
        done = await wait_for_state(
            client, await client.enqueue("double", {"n": 4}), JobState.COMPLETED
        )
        assert done.info.return_value == 8
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_a_bad_override_is_a_configuration_error(
    registry: TaskRegistry, settings: Settings
) -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_CONCURRENCY"):
        await conveyor.run_worker(registry, settings, concurrency=0)


async def test_sigterm_stops_it_gracefully_and_it_returns(
    caplog: pytest.LogCaptureFixture,
    registry: TaskRegistry,
    settings: Settings,
    gate: Gate,
    make_client: Callable[..., QueueClient],
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.worker")
    client = make_client(registry)
    before = signal.getsignal(signal.SIGTERM)
    running = asyncio.create_task(conveyor.run_worker(registry, settings))
    held = await client.enqueue("held", {})
    await asyncio.wait_for(gate.started.wait(), 10)
    # The worker's handler is in place (else the signal would end the test process).
    assert signal.getsignal(signal.SIGTERM) is not before
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_for(lambda: "worker_draining" in caplog.messages)  # it takes no more jobs
    waiting = await client.enqueue("double", {"n": 1})
    gate.release.set()
    await asyncio.wait_for(running, 15)  # it ends, without raising

    assert (await client.get_job(held)).state is JobState.COMPLETED
    assert (await client.get_job(waiting)).state is JobState.WAITING
    assert signal.getsignal(signal.SIGTERM) is before
