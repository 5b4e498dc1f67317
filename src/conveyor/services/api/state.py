"""What a running API process holds: built in the lifespan, read by every request."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, TypeVar, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.registry import TaskRegistry
from conveyor.services.api.batcher import PipelineBatcher
from conveyor.services.api.enqueue import Enqueuer
from conveyor.services.api.gate import RedisGate

T = TypeVar("T")


@dataclass
class ApiState:
    settings: Settings
    registry: TaskRegistry
    client: QueueClient
    enqueuer: Enqueuer
    batcher: PipelineBatcher | None
    gate: RedisGate

    async def bounded(self, call: Awaitable[T]) -> T:
        """``call`` through the gate: TimeoutError (then 503) instead of a hang."""
        return await self.gate.run(call)


def state_of(connection: HTTPConnection) -> ApiState:
    return cast(ApiState, connection.app.state.api)


#: A route's parameter for the running API: ``state: Api``.
Api = Annotated[ApiState, Depends(state_of)]
