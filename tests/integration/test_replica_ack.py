"""CONVEYOR_ENQUEUE_REPLICAS: an enqueue is answered only once a real replica holds the job;
when the replica cannot say so in time, a 503 (or ReplicationError), and the retry under the
same Idempotency-Key is safe."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.errors import ReplicationError
from conveyor.ports import free_port
from conveyor.redis import connect
from conveyor.testing import wait_for_sync
from tests.support.api import api_client


@pytest.fixture(scope="module")
def replicated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and one replica, in sync."""
    tmp: Path = tmp_path_factory.mktemp("replicated")
    master = RedisServer(tmp / "master", port=free_port()).start()
    replica = RedisServer(
        tmp / "replica", port=free_port(), extra_args=["--replicaof", "127.0.0.1", str(master.port)]
    )
    try:
        replica.start()
        wait_for_sync(lambda: _online(master), 20, message="the replica never synced")
        yield master, replica
    finally:
        replica.kill()
        master.kill()


def _online(master: RedisServer) -> bool:
    with redis.Redis(port=master.port, decode_responses=True) as client:
        return client.info("replication").get("slave0", {}).get("state") == "online"


@pytest.fixture
def acked(settings: Settings, replicated: tuple[RedisServer, RedisServer]) -> Settings:
    master, _ = replicated
    return settings.model_copy(
        update={"redis_url": master.url, "enqueue_replicas": 1, "enqueue_replicas_timeout_ms": 300}
    )


@pytest.fixture
async def replica_redis(replicated: tuple[RedisServer, RedisServer]) -> AsyncIterator[Redis]:
    client = connect(replicated[1].url)
    yield client
    await client.aclose()


@pytest.fixture
def stopped_replica(replicated: tuple[RedisServer, RedisServer]) -> Iterator[None]:
    """The replica frozen (SIGSTOP): it acknowledges nothing until the test ends."""
    process = replicated[1].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def job_key(settings: Settings, job_id: str) -> str:
    return f"{settings.prefix}:{settings.queue}:{job_id}"


async def test_the_client_answers_once_the_replica_holds_the_job(
    acked: Settings, replica_redis: Redis
) -> None:
    async with QueueClient.from_settings(acked) as client:
        job_id = await client.enqueue("resize", {"n": 1})
        assert await replica_redis.hget(job_key(acked, job_id), "name") == "resize"
        many = await client.enqueue_many([JobSpec("resize", {"n": i}) for i in range(3)])
        for other in many:
            assert await replica_redis.hget(job_key(acked, other), "name") == "resize"


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param({}, id="fast-path+batching"),
        pytest.param({"api_fast_path": False, "api_batch_enqueue": False}, id="route+single"),
    ],
)
async def test_every_api_enqueue_is_answered_once_the_replica_holds_it(
    acked: Settings, replica_redis: Redis, mode: dict[str, Any]
) -> None:
    async with api_client(acked, str(acked.redis_url), **mode) as api:
        plain = await api.post("/enqueue", json={"name": "echo", "data": {}})
        keyed = await api.post(
            "/enqueue",
            json={"name": "echo", "data": {"value": 2}},
            headers={"Idempotency-Key": "k1"},
        )
        bulk = await api.post(
            "/enqueue/bulk",
            json={"jobs": [{"name": "echo", "data": {"value": i}} for i in range(3)]},
        )
        assert [plain.status_code, keyed.status_code, bulk.status_code] == [201, 201, 201]
        ids = [plain.json()["id"], keyed.json()["id"], *(j["id"] for j in bulk.json()["jobs"])]
        for job_id in ids:  # at the moment of the answer, not eventually
            assert await replica_redis.exists(job_key(acked, job_id)) == 1


@pytest.mark.usefixtures("stopped_replica")
async def test_without_the_replica_the_client_raises_and_the_master_keeps_the_job(
    acked: Settings,
) -> None:
    async with QueueClient.from_settings(acked) as client:
        with pytest.raises(ReplicationError, match="only 0 of 1 replica"):
            await client.enqueue("resize", {"n": 1}, {"jobId": "chosen"})
        with pytest.raises(ReplicationError, match="only 0 of 1 replica"):
            await client.enqueue_many([JobSpec("resize", {"n": 2}, {"jobId": "chosen-2"})])
        # The master has them (replication delivers them later): a retry with the same jobId
        # finds them instead of adding others.
        for job_id in ("chosen", "chosen-2"):
            assert await client.redis.exists(job_key(acked, job_id)) == 1


async def test_a_503_without_the_replica_then_the_retry_under_the_key_returns_the_same_job(
    acked: Settings, replicated: tuple[RedisServer, RedisServer], replica_redis: Redis
) -> None:
    body = {"name": "echo", "data": {"value": 1}}
    headers = {"Idempotency-Key": "retry-me"}
    async with api_client(acked, str(acked.redis_url)) as api:
        process = replicated[1].process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            refused = await api.post("/enqueue", json=body, headers=headers)
            refused_bulk = await api.post(
                "/enqueue/bulk", json={"jobs": [body]}, headers={"Idempotency-Key": "bulk-key"}
            )
            plain = await api.post("/enqueue", json=body)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        for answer in (refused, refused_bulk, plain):
            assert answer.status_code == 503
            assert answer.headers["retry-after"]
            assert "replica" in answer.json()["detail"]
        again = await api.post("/enqueue", json=body, headers=headers)
        assert again.status_code == 200  # the job the first try made, now on the replica
        assert await replica_redis.exists(job_key(acked, again.json()["id"])) == 1
        counts = (await api.get(f"/queues/{acked.queue}")).json()
    assert counts["counts"]["waiting"] == 3  # one each: the keyed job, the bulk's, the plain one
