"""Built-in tasks for demos and tests (``CONVEYOR_TASKS=conveyor.tasks.builtin``)."""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, Field

from conveyor.registry import JobContext, TaskRegistry

registry = TaskRegistry()


class SimulatePayload(BaseModel):
    """Simulated work: sleep ``duration_ms``, then fail with probability ``fail_rate``."""

    model_config = {"extra": "forbid"}

    duration_ms: int = Field(default=2000, ge=0, le=3_600_000)
    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class SimulatedFailure(Exception):
    """Raised by ``simulate`` when its dice say fail."""


@registry.task("simulate")
async def simulate(payload: SimulatePayload, ctx: JobContext) -> dict[str, object]:
    """The seed's job: 2 s of simulated work by default, failing at ``fail_rate``."""
    steps = 4 if payload.duration_ms >= 400 else 1
    for step in range(steps):
        await asyncio.sleep(payload.duration_ms / 1000 / steps)
        if steps > 1:
            await ctx.progress(round(100 * (step + 1) / steps))
    if payload.fail_rate and random.random() < payload.fail_rate:
        raise SimulatedFailure(f"simulated failure (fail_rate={payload.fail_rate})")
    return {"slept_ms": payload.duration_ms, "attempt": ctx.attempt}
