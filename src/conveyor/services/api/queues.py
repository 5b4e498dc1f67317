"""The queues of CONVEYOR_QUEUES beside the API's default one: a client and an enqueuer each.

On one Redis they share the default queue's client, batcher and gate. In a Redis Cluster each
queue lives on the master of its own slot, so each gets its own client (``QueueConnections``)
and its own batcher (a pipeline goes to one node), still behind the one gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.registry import TaskRegistry
from conveyor.services.api.batcher import PipelineBatcher
from conveyor.services.api.enqueue import Enqueuer
from conveyor.services.api.gate import RedisGate
from conveyor.services.redis_connection import QueueConnections


@dataclass
class OtherQueues:
    clients: dict[str, QueueClient] = field(default_factory=dict)
    enqueuers: dict[str, Enqueuer] = field(default_factory=dict)
    #: Batchers made here (cluster), to close with the app.
    batchers: list[PipelineBatcher] = field(default_factory=list)

    async def close(self) -> None:
        for batcher in self.batchers:
            await batcher.close()


def new_batcher(settings: Settings, redis: Redis, client: QueueClient) -> PipelineBatcher:
    """The batcher of single enqueues to ``client``'s queue on ``redis``, as the settings say."""
    return PipelineBatcher(
        redis,
        max_inflight=settings.api_redis_pipelines,
        max_pending=settings.api_max_pending,
        timeout_s=settings.api_redis_timeout_s,
        ack=client.replica_ack,
    )


async def other_queues(
    settings: Settings,
    tasks: TaskRegistry,
    conns: QueueConnections,
    default: Enqueuer,
    gate: RedisGate,
) -> OtherQueues:
    """Clients and enqueuers of the served queues but the default one."""
    made = OtherQueues()
    for name in settings.queue_weights:
        if name == settings.queue:
            continue
        redis: Redis = await conns.of(name)
        client = QueueClient.from_settings(
            settings, registry=tasks, redis=redis, queue=name, pipelined=False
        )
        batcher = default.batcher
        if batcher is not None and redis is not conns.default:
            batcher = new_batcher(settings, redis, client)
            made.batchers.append(batcher)
        made.clients[name] = client
        made.enqueuers[name] = Enqueuer(
            client, batcher, gate, bulk_s_per_job=default.bulk_s_per_job
        )
    return made
