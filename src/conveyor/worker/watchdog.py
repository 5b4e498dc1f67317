"""A watchdog for handlers that block the event loop (CPU loops, blocking calls in async code).

While the loop is blocked nothing else runs in the process: not other jobs, not lock renewal.
Past the limit the job's lock has expired anyway, so the only sound move is to end the
process: the stalled-job check recovers the job elsewhere (and fails it for good if it keeps
stalling), and the supervisor or orchestrator starts a fresh worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

#: How often the loop proves it is alive.
BEAT_S = 0.1


class LoopWatchdog:
    """Calls ``on_stall(blocked_s)`` from a thread when the loop has not run for ``limit_s``."""

    def __init__(self, limit_s: float, on_stall: Callable[[float], None]) -> None:
        self.limit_s = limit_s
        self.on_stall = on_stall
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._beat: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._watch, name="conveyor-watchdog", daemon=True)

    def start(self) -> None:
        self._last = time.monotonic()
        self._beat = asyncio.create_task(self._beating(), name="conveyor-watchdog-beat")
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat

    async def _beating(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.limit_s / 4)):
            blocked = time.monotonic() - self._last
            if blocked > self.limit_s:
                self.on_stall(blocked)
                return
