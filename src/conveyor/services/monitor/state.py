"""What a running monitor holds: built in the lifespan, handed to routes as a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from conveyor.config import Settings
from conveyor.services.monitor.actions import Actions
from conveyor.services.monitor.auth import Access
from conveyor.services.monitor.inspector import Inspector
from conveyor.services.monitor.sse import Broadcaster


@dataclass
class MonitorState:
    settings: Settings
    access: Access
    redis: Redis
    inspector: Inspector
    actions: Actions
    broadcaster: Broadcaster


def monitor_state(connection: HTTPConnection) -> MonitorState:
    return cast(MonitorState, connection.app.state.monitor)


#: A route's parameter for the running monitor: ``monitor: Monitor``.
Monitor = Annotated[MonitorState, Depends(monitor_state)]
