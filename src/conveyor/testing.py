"""Helpers for testing code that uses Conveyor (and Conveyor's own tests)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, overload

if TYPE_CHECKING:
    from conveyor.client import JobView, QueueClient
    from conveyor.jobs import JobState

T = TypeVar("T")

POLL_INTERVAL_S = 0.01


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T | None]], timeout: float = 10.0, *, message: str = ""
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T | None], timeout: float = 10.0, *, message: str = ""
) -> T: ...


async def wait_for(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = 10.0,
    *,
    message: str = "",
) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; answer it.

    The one polling helper: raises TimeoutError with ``message`` when time runs out.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        result = predicate()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(
                message or f"condition not met within {timeout:g} s (last: {last!r})"
            )
        await asyncio.sleep(POLL_INTERVAL_S)


def wait_for_sync(predicate: Callable[[], T], timeout: float = 10.0, *, message: str = "") -> T:
    """``wait_for`` for synchronous code (process tests)."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(
                message or f"condition not met within {timeout:g} s (last: {last!r})"
            )
        time.sleep(POLL_INTERVAL_S)


async def wait_for_state(
    client: QueueClient, job_id: str, state: JobState, timeout: float = 10.0
) -> JobView:
    """Wait until the job is in ``state``; answer its view (the job's snapshot then)."""

    async def reached() -> JobView | None:
        view = await client.get_job(job_id)
        return view if view.state is state else None

    view: JobView | None = await wait_for(
        reached, timeout, message=f"job {job_id} never became {state.value}"
    )
    assert view is not None  # wait_for answers only a truthy result
    return view
