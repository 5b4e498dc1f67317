"""How much Redis work the requests of one API process may do at once, and for how long.

Every request's Redis calls pass the gate: at most ``connections`` at once (the rest wait
their turn instead of failing), and all of it, waiting included, within ``timeout_s``. A
request that cannot get through in time answers 503 rather than hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")


class RedisGate:
    def __init__(self, connections: int, timeout_s: float) -> None:
        self.connections = connections
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(connections)

    @asynccontextmanager
    async def open(self, timeout_s: float | None = None) -> AsyncIterator[None]:
        """A slot for the block's Redis calls; TimeoutError when the bound (``timeout_s``,
        by default the gate's) runs out."""
        async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
            async with self._slots:
                yield

    async def run(self, call: Awaitable[T]) -> T:
        async with self.open():
            return await call
