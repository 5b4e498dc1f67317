"""Conveyor's side of the interop tasks: the same job names as ``node/worker.mjs`` handles, so
either side can run any job of the test queues.

- ``echo``: answers ``{"echo": data, "attempt": n, "by": "conveyor"}``.
- ``flaky``: fails until attempt ``succeed_on``, then answers ``{"attempt": n, "by": ...}``.
- ``fail``: always fails.

``build_registry(runs)`` records each attempt in ``runs`` (for in-process workers);
``registry`` is the catalogue processes load (``CONVEYOR_TASKS=tests.interop.tasks``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from conveyor.registry import EmptyPayload, JobContext, TaskRegistry


class FlakyPayload(BaseModel):
    succeed_on: int


class InteropFailure(Exception):
    """What the ``flaky`` and ``fail`` tasks raise."""


@dataclass
class Runs:
    """What an in-process Conveyor worker ran: attempts per job and the order jobs started."""

    starts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    order: list[str] = field(default_factory=list)

    def record(self, ctx: JobContext) -> None:
        self.starts[ctx.job_id].append(time.monotonic())
        self.order.append(ctx.job_id)


def build_registry(runs: Runs | None = None) -> TaskRegistry:
    registry = TaskRegistry()
    record = runs.record if runs is not None else (lambda ctx: None)

    @registry.task("echo")
    async def echo(payload: EmptyPayload, ctx: JobContext) -> dict[str, Any]:
        record(ctx)
        return {"echo": payload.model_dump(), "attempt": ctx.attempt, "by": "conveyor"}

    @registry.task("flaky")
    async def flaky(payload: FlakyPayload, ctx: JobContext) -> dict[str, Any]:
        record(ctx)
        if ctx.attempt < payload.succeed_on:
            raise InteropFailure(f"conveyor flaky attempt {ctx.attempt}")
        return {"attempt": ctx.attempt, "by": "conveyor"}

    @registry.task("fail")
    async def fail(payload: EmptyPayload, ctx: JobContext) -> None:
        record(ctx)
        raise InteropFailure(f"conveyor failure on attempt {ctx.attempt}")

    return registry


registry = build_registry()
