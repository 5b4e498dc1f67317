"""Short collector pauses in a long-running server: the start-up heap is frozen once it serves.

CPython's cyclic garbage collector now and then makes a full pass (generation 2) over every
object the process holds. In ``conveyor api`` that heap is mostly what start-up built (imported
modules, FastAPI's routes and models, pydantic's validators, the task catalogue), and under
load such a pass came about 1.5 times a second and stopped the event loop for 45-50 ms each
time, right in the requests then in flight: it was the API's p99 at 50 connections
(``bench/api/tail.py`` shows the pauses, the loop lag and the request times; the figures are
in docs/benchmarks.md). Once start-up is done, :func:`freeze_startup_heap` collects what start-up
left as garbage and moves every object still alive into the permanent generation
(``gc.freeze``), which full passes no longer scan: they then look only at what came after, and
take a millisecond or two. Objects frozen this way live as long as the process anyway; they
are still freed by reference counting if they are dropped.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive; answers how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class FreezeHeapAfterStartup:
    """ASGI wrapper: freezes the heap (:func:`freeze_startup_heap`) just before the server
    learns that the app's lifespan start-up has completed, i.e. before the first request.
    ``then``, when given, is called right after the freeze: the server can then hand its
    connections the wrapped app itself, so requests do not pass through this layer."""

    def __init__(self, app: ASGIApp, then: Callable[[], None] | None = None) -> None:
        self.app = app
        self.then = then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_after_freeze(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                freeze_startup_heap()
                if self.then is not None:
                    self.then()
            await send(message)

        await self.app(scope, receive, send_after_freeze)
