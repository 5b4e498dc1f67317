"""What a running API process holds: built in the lifespan, read by every request."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
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
    #: Every queue this API serves (CONVEYOR_QUEUES), by name; ``client`` and ``enqueuer``
    #: are CONVEYOR_QUEUE's. Empty: that one queue alone.
    clients: dict[str, QueueClient] = field(default_factory=dict)
    enqueuers: dict[str, Enqueuer] = field(default_factory=dict)

    def served(self, queue: str | None) -> str | None:
        """``queue`` (None: the default) when this API serves it, else None."""
        if queue is None or queue == self.client.bull.name:
            return self.client.bull.name
        return queue if queue in self.clients else None

    @property
    def queue_names(self) -> list[str]:
        return [self.client.bull.name, *(q for q in self.clients if q != self.client.bull.name)]

    def client_for(self, queue: str) -> QueueClient:
        """The client of a served queue (``served`` said yes)."""
        return self.clients.get(queue, self.client)

    def enqueuer_for(self, queue: str) -> Enqueuer:
        return self.enqueuers.get(queue, self.enqueuer)

    async def bounded(self, call: Awaitable[T]) -> T:
        """``call`` through the gate: TimeoutError (then 503) instead of a hang."""
        return await self.gate.run(call)


def state_of(connection: HTTPConnection) -> ApiState:
    return cast(ApiState, connection.app.state.api)


#: A route's parameter for the running API: ``state: Api``.
Api = Annotated[ApiState, Depends(state_of)]
