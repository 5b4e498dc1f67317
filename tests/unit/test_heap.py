"""The servers freeze their start-up heap once the app has started, and only then."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from conveyor.services.heap import FreezeHeapAfterStartup
from conveyor.services.serving import ConnectionLimits, ServingConfig


class _Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_the_heap_is_frozen_as_startup_completes_after_collecting_its_garbage() -> None:
    frozen_during_startup: list[int] = []
    garbage = _Cycle()
    dead = weakref.ref(garbage)
    del garbage  # a cycle: only the collector frees it

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        frozen_during_startup.append(gc.get_freeze_count())
        await send({"type": "lifespan.startup.complete"})

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    sent: list[tuple[str, int]] = []

    async def send(message: Any) -> None:
        sent.append((message["type"], gc.get_freeze_count()))

    gc.unfreeze()
    try:
        await FreezeHeapAfterStartup(app)({"type": "lifespan"}, receive, send)
        assert frozen_during_startup == [0]
        assert sent[0][0] == "lifespan.startup.complete"
        assert sent[0][1] > 1000  # the interpreter's and the modules' objects at least
        assert dead() is None  # collected before the freeze, not kept for good
    finally:
        gc.unfreeze()


async def test_requests_pass_through_untouched() -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        return None

    scope = {"type": "http", "path": "/enqueue"}
    await FreezeHeapAfterStartup(app)(scope, receive, send)
    assert calls == [(scope, receive, send)]
    assert gc.get_freeze_count() == 0


def test_the_served_app_is_wrapped() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    config = ServingConfig(app, limits=ConnectionLimits(), proxy_headers=False)
    config.load()
    assert isinstance(config.loaded_app, FreezeHeapAfterStartup)


async def test_once_started_the_server_hands_connections_the_app_itself() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        return None

    config = ServingConfig(app, limits=ConnectionLimits(), proxy_headers=False)
    config.load()
    wrapper = config.loaded_app
    assert isinstance(wrapper, FreezeHeapAfterStartup)
    try:
        await wrapper({"type": "lifespan"}, receive, send)
    finally:
        gc.unfreeze()
    assert config.loaded_app is wrapper.app
