"""The benchmark's task catalogue: one no-op task, ``noop``.

The worker contenders build it with a hook that records each start; the HTTP API loads the
plain ``registry`` (``CONVEYOR_TASKS=conveyor.tasks.builtin,bench.tasks``) to validate jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from conveyor import JobContext, TaskRegistry


class Probe(BaseModel):
    """A no-op job's payload: ``k`` tags a job whose start is timed, ``fail`` makes it raise,
    ``sleep_ms`` makes one that does not fail take that long."""

    k: int | None = None
    fail: bool = False
    sleep_ms: int = 0


def make_registry(on_start: Callable[[dict[str, Any]], None] | None = None) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("noop")
    async def noop(payload: Probe, ctx: JobContext) -> None:
        if on_start is not None and (payload.k is not None or payload.fail):
            on_start({"k": payload.k, "fail": payload.fail})
        if payload.sleep_ms:
            await asyncio.sleep(payload.sleep_ms / 1000)

    return registry


registry = make_registry()
