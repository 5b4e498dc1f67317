"""Helpers for testing code that uses Conveyor (and Conveyor's own tests)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.01


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, *, message: str = ""
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
