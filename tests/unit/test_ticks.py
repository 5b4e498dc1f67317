"""The worker's periodic duties wake on one clock grid (``conveyor.worker.ticks``), so the
cancel watch's look and the heartbeat go out in the same event-loop iteration (one write)."""

from __future__ import annotations

import asyncio
import itertools
import math
import os

from conveyor.worker.ticks import PHASE_SPAN_S, phase_s, sleep_to_tick


async def _iterations(counter: list[int], stop: asyncio.Event) -> None:
    """Counts the event loop's iterations (one call_soon callback per iteration)."""
    loop = asyncio.get_running_loop()

    def step() -> None:
        counter[0] += 1
        if not stop.is_set():
            loop.call_soon(step)

    loop.call_soon(step)
    await stop.wait()


async def test_callers_of_an_interval_and_of_its_multiple_wake_in_the_same_iteration() -> None:
    counter = [0]
    stop = asyncio.Event()
    counting = asyncio.create_task(_iterations(counter, stop))
    woke: dict[str, list[tuple[int, float]]] = {"quarter": [], "half": []}
    loop = asyncio.get_running_loop()

    async def tick(name: str, interval: float, times: int) -> None:
        for _ in range(times):
            await sleep_to_tick(interval)
            woke[name].append((counter[0], loop.time()))

    # Exact in binary, as the defaults (0.25 s, 0.5 s) are.
    await asyncio.gather(tick("quarter", 0.0625, 8), tick("half", 0.125, 4))
    stop.set()
    await counting

    quarter = {iteration for iteration, _ in woke["quarter"]}
    assert len(quarter) == 8
    assert {iteration for iteration, _ in woke["half"]} <= quarter  # every one with a quarter
    # Never early, never twice in one slot of the grid (however late a busy loop wakes it).
    shift = phase_s(os.getpid())
    slots = [math.floor((when - shift) / 0.0625 + 1e-9) for _, when in woke["quarter"]]
    assert all(a < b for a, b in itertools.pairwise(slots))


async def test_a_sleep_cancelled_before_its_tick_ends_quietly() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        sleeper = asyncio.create_task(sleep_to_tick(0.0625))
        await asyncio.sleep(0)
        sleeper.cancel()
        await asyncio.gather(sleeper, return_exceptions=True)
        await asyncio.sleep(0.15)  # past the tick it waited for
    finally:
        loop.set_exception_handler(None)
    assert sleeper.cancelled()
    assert errors == []


def test_processes_tick_at_different_moments() -> None:
    """Worker processes of one host share the loop's clock: their grids are shifted apart."""
    shifts = [phase_s(pid) for pid in range(1000, 1010)]
    assert all(0 <= shift < PHASE_SPAN_S for shift in shifts)
    ordered = sorted(shifts)
    assert min(b - a for a, b in itertools.pairwise(ordered)) > PHASE_SPAN_S / 50
