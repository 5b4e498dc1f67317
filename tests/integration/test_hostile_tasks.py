"""Hostile tasks: whatever a handler raises is one failed attempt with its error recorded,
following the retry policy, and the worker process lives on to run the next job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from conveyor.client import QueueClient
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for_state
from conveyor.worker import Worker


class Item(BaseModel):
    n: int = 0


class Custom(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class BrokenStrBase(BaseException):
    def __str__(self) -> str:
        raise SystemExit("from __str__")


def _raise(kind: str) -> None:
    if kind == "system_exit":
        raise SystemExit(3)
    if kind == "keyboard_interrupt":
        raise KeyboardInterrupt("pressed")
    if kind == "custom_base":
        raise Custom("custom base")
    if kind == "broken_str":
        raise BrokenStr()
    if kind == "broken_str_base":
        raise BrokenStrBase()
    if kind == "cancelled":
        raise asyncio.CancelledError("handler's own")
    raise AssertionError(kind)


#: kind -> the error text recorded on the job and in its failure record.
EXPECTED = {
    "system_exit": "SystemExit: 3",
    "keyboard_interrupt": "KeyboardInterrupt: pressed",
    "custom_base": "Custom: custom base",
    "broken_str": "BrokenStr",
    "broken_str_base": "BrokenStrBase",
    "cancelled": "CancelledError: handler's own",
}


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("ok")
    async def ok(payload: Item, ctx: JobContext) -> int:
        return payload.n + 1

    for kind in EXPECTED:

        async def hostile_async(payload: Item, ctx: JobContext, kind: str = kind) -> None:
            _raise(kind)

        def hostile_sync(payload: Item, ctx: JobContext, kind: str = kind) -> None:
            _raise(kind)

        registry.task(f"async_{kind}")(hostile_async)
        registry.task(f"sync_{kind}")(hostile_sync)
    return registry


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("style", ["async", "sync"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
async def test_whatever_a_handler_raises_is_one_failed_attempt_and_the_worker_lives_on(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    kind: str,
    style: str,
    retries: int,
) -> None:
    client = make_client(registry)
    worker = make_worker(registry)
    job_id = await client.enqueue(
        f"{style}_{kind}", {}, {"attempts": retries + 1, "backoff": {"type": "fixed", "delay": 1}}
    )

    view = await wait_for_state(client, job_id, JobState.FAILED)
    assert view.info.attempts_made == retries + 1  # each attempt ran once, none "stalled"
    assert view.info.failed_reason == EXPECTED[kind]
    assert len(view.info.stacktrace) == retries + 1
    record = await client.failure_record(job_id)
    assert record is not None
    assert record["error"] == EXPECTED[kind]

    # The worker is still there and takes the next job.
    after = await client.enqueue("ok", {"n": 1})
    done = await wait_for_state(client, after, JobState.COMPLETED)
    assert done.info.return_value == 2
    assert worker.running


async def test_shutdown_still_hands_a_running_job_back_instead_of_failing_it(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    """The worker's own cancellation keeps its meaning: a job still running when the grace
    period ends goes back to wait, not to failed."""
    started = asyncio.Event()
    registry = TaskRegistry()

    @registry.task("slow")
    async def slow(payload: Item, ctx: JobContext) -> None:
        started.set()
        await asyncio.Event().wait()

    client = make_client(registry)
    worker = make_worker(registry, grace_s=0.1)
    job_id = await client.enqueue("slow", {}, {"attempts": 1})
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    view = await wait_for_state(client, job_id, JobState.WAITING)
    assert view.info.attempts_made == 0
    assert await client.failure_record(job_id) is None
