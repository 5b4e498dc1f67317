"""Server-sent events: one poller for every open dashboard, pushing changes only.

Whatever the number of browsers, Redis is read once per tick: a ``Broadcaster`` runs while at
least one subscriber listens and hands each the newest snapshot (a slow browser skips to the
newest, it never makes a backlog). FastAPI's ``EventSourceResponse`` writes the wire format
and the keep-alive comments (every 15 s of silence, so proxies keep the stream open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.sse import ServerSentEvent
from redis.exceptions import RedisError

from conveyor.log import get_logger

log = get_logger("conveyor.monitor")

#: What the browser waits before reconnecting after a drop (ms).
RECONNECT_MS = 2000


class Broadcaster:
    """Polls ``source`` every ``interval_s`` while anyone listens; publishes when it changes."""

    def __init__(self, source: Callable[[], Awaitable[dict[str, Any]]], interval_s: float) -> None:
        self.source = source
        self.interval_s = interval_s
        self.latest: ServerSentEvent | None = None
        self._subscribers: set[asyncio.Queue[ServerSentEvent]] = set()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[ServerSentEvent]]:
        """A queue receiving each new snapshot (as an event) while the context is open."""
        queue: asyncio.Queue[ServerSentEvent] = asyncio.Queue(maxsize=1)
        if self.latest is not None:
            queue.put_nowait(self.latest)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="conveyor-monitor-sse")
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def _poll(self) -> None:
        while self._subscribers:
            try:
                snapshot = json.dumps(await self.source())
                message = ServerSentEvent(event="overview", raw_data=snapshot)
            except (RedisError, OSError) as exc:
                log.warning("monitor_poll_failed", error=str(exc))
                trouble = json.dumps({"error": str(exc)})
                message = ServerSentEvent(event="trouble", raw_data=trouble)
            if message != self.latest:
                self.latest = message
                for queue in list(self._subscribers):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(message)
            await asyncio.sleep(self.interval_s)
        self.latest = None

    async def close(self) -> None:
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def event_stream(broadcaster: Broadcaster) -> AsyncIterator[ServerSentEvent]:
    """The events of ``GET /api/events``: the reconnect delay, then snapshots as they change."""
    async with broadcaster.subscribe() as queue:
        yield ServerSentEvent(retry=RECONNECT_MS)
        while True:
            yield await queue.get()
