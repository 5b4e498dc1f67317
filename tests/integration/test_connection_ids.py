"""The bulk's commit proof follows the connection that really sends its MULTI: client ids are
asked once per connect, and a reconnect updates both the id and the bulk that owns it."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from conveyor.services.api.connections import ConnectionIds


@dataclass
class Owner:
    connection: int | None = None


async def test_the_id_is_the_connections_own_and_asked_once(redis: Redis) -> None:
    ids = ConnectionIds()
    conn = await redis.connection_pool.get_connection()
    try:
        known = await ids.id_of(conn)
        listed = await redis.client_list(client_id=[known])
        assert len(listed) == 1
        assert int(listed[0]["id"]) == known
        await conn.disconnect()
        assert await ids.id_of(conn) == known  # no round trip: it did not reconnect
        assert not conn.is_connected
    finally:
        await redis.connection_pool.release(conn)


async def test_a_reconnect_updates_the_id_and_the_owner(redis: Redis) -> None:
    ids = ConnectionIds()
    conn = await redis.connection_pool.get_connection()
    owner = Owner()
    try:
        first = await ids.id_of(conn)
        owner.connection = first
        with ids.owned_by(conn, owner):
            await redis.client_kill_filter(_id=str(first))
            await conn.disconnect()
            await conn.send_command("PING")  # what redis-py's retry does: connect, send again
            assert await conn.read_response() in (b"PONG", "PONG")
        second = await ids.id_of(conn)
        assert second != first
        assert owner.connection == second
        assert await redis.client_list(client_id=[second])
        assert not await redis.client_list(client_id=[first])
        await conn.disconnect()
        await conn.connect()  # no owner any more: only the id follows
        assert await ids.id_of(conn) not in (first, second)
        assert owner.connection == second
    finally:
        await redis.connection_pool.release(conn)
