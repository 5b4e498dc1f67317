"""One process's concurrency shared by the queues it serves (``CONVEYOR_QUEUES``), by weight.

Every queue's worker takes a slot from the pool before it fetches a job and gives it back when
the job (and any job fetched on its way out) is done. The pool is work-conserving: a free slot
goes to whoever asks, so a queue alone with work may use all of them. While several queues
wait, a freed slot goes to the one furthest below its weighted share (fewest active jobs per
unit of weight), and a queue above its share stops chaining its next job onto a finished one
(``should_yield``), so under contention the active jobs settle at the weights' proportions
within one job's run time. No slot is ever reserved for an idle queue.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class StopFlag(Protocol):
    """What an attempt asks before it chains the next job onto a finished one."""

    def is_set(self) -> bool: ...


class SlotPool:
    """``concurrency`` slots shared by the queues in ``weights``."""

    def __init__(self, concurrency: int, weights: dict[str, int]) -> None:
        if concurrency < 1 or not weights:
            raise ValueError("a slot pool needs a concurrency of 1 or more and a queue")
        self.concurrency = concurrency
        self.weights = dict(weights)
        self.free = concurrency
        self.active = dict.fromkeys(weights, 0)
        self._waiting: dict[str, asyncio.Future[None]] = {}

    def share(self, queue: str) -> int:
        """Active jobs of ``queue`` (for tests and logs)."""
        return self.active[queue]

    async def take(self, queue: str) -> bool:
        """Wait for a slot for ``queue`` (one waiter per queue: its fetch loop); True once
        held. Cancelling the wait takes nothing."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
            self.active[queue] += 1
            return True
        future = asyncio.get_running_loop().create_future()
        self._waiting[queue] = future
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give_back(queue)  # granted just as the wait was cancelled
            elif self._waiting.get(queue) is future:
                del self._waiting[queue]
            raise
        return True

    def give_back(self, queue: str) -> None:
        """``queue`` is done with one slot; the neediest waiting queue gets it."""
        self.active[queue] -= 1
        self.free += 1
        while self.free > 0 and self._waiting:
            neediest = min(self._waiting, key=lambda name: self.active[name] / self.weights[name])
            future = self._waiting.pop(neediest)
            if future.done():
                continue
            self.free -= 1
            self.active[neediest] += 1
            future.set_result(None)

    def should_yield(self, queue: str) -> bool:
        """Whether ``queue``, about to finish a job, should give its slot back instead of
        fetching its next job: another queue is waiting and would get the slot, being further
        below its share than ``queue`` would be without it."""
        if not self._waiting:
            return False
        after = self.active[queue] - 1
        weight = self.weights[queue]
        return any(
            self.active[other] * weight < after * self.weights[other]
            for other in self._waiting
            if other != queue
        )


class YieldingStop:
    """The flag a pooled worker's attempts read as "stopping": set when the worker stops, and
    also while its queue should give its slot to another (then a finished job fetches no
    next one)."""

    def __init__(self, stopping: asyncio.Event, pool: SlotPool, queue: str) -> None:
        self._stopping = stopping
        self._pool = pool
        self._queue = queue

    def is_set(self) -> bool:
        return self._stopping.is_set() or self._pool.should_yield(self._queue)
