"""The connection seam on real servers: every connection asks its resolver where to go on each
connect, refuses a server that is not a master (ROLE), and drops itself when its master is
demoted (READONLY), so the next command reaches the new master. (A Sentinel failover does
this to every connection; here a resolver of the test's own points at whichever server the
test says, and ``REPLICAOF`` demotes one.)"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.embedded import RedisServer
from conveyor.ports import free_port
from conveyor.redis import ResolvedConnection
from conveyor.redis_address import Address
from conveyor.resp import DemotedError, RespConnection


class Pointer:
    """An AddressResolver that answers whatever address the test set last."""

    checks_role = True

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked = 0

    async def resolve(self) -> Address:
        self.asked += 1
        return Address("127.0.0.1", self.port)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    first = RedisServer(tmp_path / "a", port=free_port()).start()
    second = RedisServer(tmp_path / "b", port=free_port()).start()
    yield first, second
    first.kill()
    second.kill()


def demote(server: RedisServer, to: RedisServer) -> None:
    with redis.Redis(port=server.port) as client:
        client.replicaof("127.0.0.1", to.port)


@pytest.fixture
async def resolved(servers: tuple[RedisServer, RedisServer]) -> AsyncIterator[Redis]:
    """A redis-py client whose connections ask a Pointer (as a Sentinel client's do)."""
    pointer = Pointer(servers[0].port)
    pool = ConnectionPool(
        connection_class=ResolvedConnection,
        resolver=pointer,
        decode_responses=True,
        retry_on_error=[RedisConnectionError],
    )
    client = Redis.from_pool(pool)
    yield client
    await client.aclose()


async def test_the_lean_connection_follows_a_demotion_to_the_new_master(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    first, second = servers
    pointer = Pointer(first.port)
    connection = RespConnection.like(Redis(port=first.port))
    connection.resolver = pointer
    assert await connection.execute_many([("SET", "k", "1")]) == ["OK"]

    demote(first, second)  # what a failover does to the old master
    pointer.port = second.port  # and what the sentinels then answer
    with pytest.raises(DemotedError, match="READONLY"):  # as a lost connection, not a reply
        await connection.execute_many([("SET", "k", "2")])
    assert not connection.connected  # dropped: the next command connects afresh
    assert await connection.execute_many([("SET", "k", "3")]) == ["OK"]
    assert connection.port == second.port
    await connection.close()
    with redis.Redis(port=second.port, decode_responses=True) as client:
        assert client.get("k") == "3"


async def test_a_connection_refuses_a_server_that_is_not_a_master(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    first, second = servers
    demote(first, second)
    connection = RespConnection.like(Redis(port=first.port))
    connection.resolver = Pointer(first.port)  # a sentinel still naming the demoted master
    with pytest.raises(RedisConnectionError, match="is a slave now, not the master"):
        await connection.connect()


async def test_redis_py_connections_follow_a_demotion_without_the_caller_seeing_it(
    servers: tuple[RedisServer, RedisServer], resolved: Redis
) -> None:
    first, second = servers
    assert await resolved.set("k", "1")
    pointer = resolved.connection_pool.connection_kwargs["resolver"]
    demote(first, second)
    pointer.port = second.port
    # READONLY drops the connection; redis-py's retry connects again, to the new master.
    assert await resolved.set("k", "2")
    assert await resolved.get("k") == "2"
    with redis.Redis(port=second.port, decode_responses=True) as client:
        assert client.get("k") == "2"
    assert pointer.asked >= 2


async def test_a_frozen_master_is_left_after_the_reply_timeout_for_the_one_named_next(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    """A master that stops answering (a partition, a freeze) costs a reply timeout, then the
    connection asks its resolver again: lean and redis-py connections alike."""
    first, second = servers
    pointer = Pointer(first.port)
    lean = RespConnection.like(Redis(port=first.port))
    lean.resolver, lean.timeout_s = pointer, 0.3
    pool = ConnectionPool(
        connection_class=ResolvedConnection,
        resolver=pointer,
        decode_responses=True,
        socket_timeout=0.3,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    pooled = Redis.from_pool(pool)
    assert await lean.execute_many([("SET", "lean", "1")]) == ["OK"]
    assert await pooled.set("pooled", "1")
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGSTOP)
    try:
        pointer.port = second.port  # the sentinels name another master meanwhile
        with pytest.raises(RedisTimeoutError):
            await lean.execute_many([("SET", "lean", "2")])
        assert await lean.execute_many([("SET", "lean", "3")]) == ["OK"]
        assert await pooled.set("pooled", "2")  # redis-py's retry reconnects by itself
    finally:
        os.kill(first.process.pid, signal.SIGCONT)
        await lean.close()
        await pooled.aclose()
    with redis.Redis(port=second.port, decode_responses=True) as client:
        assert (client.get("lean"), client.get("pooled")) == ("3", "2")
