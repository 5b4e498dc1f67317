"""The Redis client id of each pooled connection, learnt once per connect instead of per bulk.

A bulk's commit proof (``Enqueuer._committed``) needs the client id of the connection that
sent its MULTI: once that connection is gone from CLIENT LIST, Redis has run everything it
sent, and the receipt tells for sure. Asking ``CLIENT ID`` before every bulk cost a round trip
(and a WATCH to hold the connection for it). Here the id is asked once per connection and
kept on the connection; a connect callback asks again whenever redis-py reconnects that
connection object, before anything else is sent on it, and tells the bulk that then owns the
connection (``owned_by``), so a MULTI that redis-py sends again after a reconnect is followed
on the connection that really carries it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from conveyor.resp import RespConnection

#: Where a connection keeps its Redis client id (redis-py connections take attributes).
_ID = "_conveyor_client_id"
_OWNER = "_conveyor_owner"


class Owner(Protocol):
    """What follows a connection's id while it sends one request's MULTI."""

    connection: int | None


async def _ask(connection: AbstractConnection) -> int:
    try:
        await connection.send_command("CLIENT", "ID")
        return int(await connection.read_response())
    except BaseException:
        # an unread answer must not reach the next user of the connection
        await connection.disconnect()
        raise


class ConnectionIds:
    """Client ids of the connections a pool hands out (one instance per app: the connect
    callbacks hold it by weak reference)."""

    async def id_of(self, connection: AbstractConnection) -> int:
        """The connection's client id (a round trip only the first time it is asked)."""
        known: int | None = getattr(connection, _ID, None)
        if known is None:
            connection.register_connect_callback(self._connected)  # type: ignore[no-untyped-call]
            known = await _ask(connection)
            setattr(connection, _ID, known)
        return known

    async def _connected(self, connection: AbstractConnection) -> None:
        setattr(connection, _ID, None)
        known = await _ask(connection)
        setattr(connection, _ID, known)
        owner: Any = getattr(connection, _OWNER, None)
        if owner is not None:
            owner.connection = known

    @contextmanager
    def owned_by(self, connection: AbstractConnection, owner: Owner) -> Iterator[None]:
        """While the block runs, a reconnect of ``connection`` updates ``owner.connection``."""
        setattr(connection, _OWNER, owner)
        try:
            yield
        finally:
            setattr(connection, _OWNER, None)


class LeanConnections:
    """Lean connections (``conveyor.resp``: hiredis packs and parses in C) for the bulk's
    MULTI, one per bulk in flight, kept for the next one. Each knows its Redis client id
    from its greeting (asked again on every connect). A bulk that fails or is cut off
    closes its connection, so Redis sees it go: that is what the commit proof waits for."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._free: list[RespConnection] = []

    @asynccontextmanager
    async def take(self) -> AsyncIterator[RespConnection]:
        """A connected connection for one bulk's MULTI."""
        if self._free:
            connection = self._free.pop()
        else:
            connection = RespConnection.like(self._redis)
            connection.want_client_id = True
        try:
            await connection.connect()
            yield connection
        except BaseException:
            await connection.close()
            raise
        self._free.append(connection)

    async def close(self) -> None:
        free, self._free = self._free, []
        for connection in free:
            await connection.close()
