"""A clock grid for the worker's periodic Redis calls, so that they coalesce.

The cancel watch (``cancel``, every 0.25 s while handlers run) and the heartbeat
(``heartbeat``, every 0.5 s by default) each send one call on the worker's hot path. Made at
independent moments, each is a round trip of its own for Redis: a read event and a reply
written, about 10 µs of its CPU on this machine whatever the command. Woken at the multiples
of their intervals on the event loop's clock instead, every heartbeat falls on a tick of the
cancel watch: both calls are made in the same event-loop tick and go out in one write
(``conveyor.pipeline.AutoPipeline``): 4 round trips a second instead of 7 while handlers run.
"""

from __future__ import annotations

import asyncio
import math
import os

#: The grid of each process is shifted by a share of this (by its pid): the processes of one
#: host share the loop's clock (CLOCK_MONOTONIC), and without it they would all call Redis at
#: the same instants, and a cancel would wait as long on every one of them.
PHASE_SPAN_S = 1.0
_GOLDEN = 0.6180339887498949


def phase_s(pid: int) -> float:
    """This process's shift of the grid, in [0, PHASE_SPAN_S): spread evenly over pids."""
    return (pid * _GOLDEN) % 1.0 * PHASE_SPAN_S


async def sleep_to_tick(interval_s: float) -> None:
    """Sleep until the next multiple of ``interval_s`` on the running loop's clock (shifted by
    this process's ``phase_s``).

    Every caller in this process with the same interval (or one that divides it) wakes in the
    same loop iteration: the deadline is computed, not added to "now", so it is the same float
    for all (intervals such as 0.25 and 0.5 are exact in binary, so their multiples agree
    exactly, and the same shift is added to both).
    """
    loop = asyncio.get_running_loop()
    shift = phase_s(os.getpid())
    deadline = (math.floor((loop.time() - shift) / interval_s) + 1) * interval_s + shift
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(deadline, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
