"""The worker's hot path against a real redis-server: the pipelined RESP connection and the
AutoPipeline on top of it (ordering, reloading scripts, losing the connection, timeouts)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.pipeline import AutoPipeline
from conveyor.resp import RespConnection

ECHO = "return {KEYS[1], ARGV[1]}"
INCR = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
async def conn(redis: Redis) -> AsyncIterator[RespConnection]:
    """A pipelined connection to the test's Redis, closed at teardown."""
    connection = RespConnection.like(redis)
    yield connection
    await connection.close()


@pytest.fixture
def auto(conn: RespConnection) -> AutoPipeline:
    return AutoPipeline(conn)


async def test_batches_sent_back_to_back_get_their_own_replies_in_order(
    redis: Redis, prefix: str, auto: AutoPipeline
) -> None:
    echo = redis.register_script(ECHO)
    await redis.script_load(ECHO)

    # Calls spread over many ticks and many batches, all in flight at once.
    async def one(i: int) -> list[str]:
        await asyncio.sleep((i % 7) / 1000)
        result: list[str] = await auto.call(echo, [f"{prefix}:k{i}"], [str(i)])
        return result

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert results == [[f"{prefix}:k{i}", str(i)] for i in range(500)]


async def test_a_script_redis_forgot_is_loaded_again_and_runs_once(
    redis: Redis, prefix: str, auto: AutoPipeline
) -> None:
    incr = redis.register_script(INCR)
    key = f"{prefix}:counter"
    await redis.script_flush()
    assert await asyncio.gather(*(auto.call(incr, [key], []) for _ in range(10))) == list(
        range(1, 11)
    )
    assert await redis.get(key) == "10"


async def test_an_eager_call_is_written_at_once_when_the_connection_is_idle(
    redis: Redis, prefix: str, conn: RespConnection, auto: AutoPipeline
) -> None:
    """An enqueue's call (``eager``) waits for no end of tick on an idle connection; one made
    while another is in flight is batched behind it; NOSCRIPT is handled as for any call."""
    incr = redis.register_script(INCR)
    key = f"{prefix}:eager"
    await conn.connect()
    await redis.script_flush()
    first = auto.call(incr, [key], [], eager=True)
    assert not conn.idle  # already written: its reply is awaited before this tick ends
    second = auto.call(incr, [key], [], eager=True)
    assert list(await asyncio.gather(first, second)) == [1, 2]
    assert conn.idle
    lazy = auto.call(incr, [key], [])
    assert conn.idle  # a plain call waits for the end of the tick
    assert await lazy == 3
    assert await redis.get(key) == "3"


async def test_an_error_reply_fails_only_its_own_call(
    redis: Redis, prefix: str, auto: AutoPipeline
) -> None:
    bad = redis.register_script("return redis.call('NOSUCHCOMMAND')")
    echo = redis.register_script(ECHO)
    results = await asyncio.gather(
        auto.call(echo, [f"{prefix}:a"], ["1"]),
        auto.call(bad, [f"{prefix}:b"], []),
        auto.call(echo, [f"{prefix}:c"], ["3"]),
        return_exceptions=True,
    )
    assert results[0] == [f"{prefix}:a", "1"]
    assert isinstance(results[1], ResponseError)
    assert results[2] == [f"{prefix}:c", "3"]


async def test_a_killed_connection_fails_the_calls_in_flight_and_the_next_call_reconnects(
    redis: Redis, prefix: str, conn: RespConnection, auto: AutoPipeline
) -> None:
    echo = redis.register_script(ECHO)
    await redis.script_load(ECHO)
    assert await auto.call(echo, [f"{prefix}:x"], ["1"]) == [f"{prefix}:x", "1"]
    (client_id,) = await conn.execute_many([("CLIENT", "ID")])
    hanging = asyncio.ensure_future(conn.execute_many([("BLPOP", f"{prefix}:never", 0)]))
    await asyncio.sleep(0.05)
    await redis.client_kill_filter(_id=client_id)
    with pytest.raises(RedisConnectionError):
        await hanging
    assert await auto.call(echo, [f"{prefix}:y"], ["2"]) == [f"{prefix}:y", "2"]


async def test_a_reply_that_never_comes_times_out_and_the_connection_recovers(
    redis: Redis, prefix: str, conn: RespConnection
) -> None:
    conn.timeout_s = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RedisTimeoutError):
        await conn.execute_many([("BLPOP", f"{prefix}:never", 0)])
    assert 0.25 <= loop.time() - started < 2.0
    assert await conn.execute_many([("PING",)]) == ["PONG"]


async def test_unreachable_redis_fails_the_call_with_a_connection_error() -> None:
    conn = RespConnection("redis://127.0.0.1:1")
    auto = AutoPipeline(conn)
    script = Redis().register_script(ECHO)
    with pytest.raises(RedisConnectionError):
        await auto.call(script, ["k"], ["v"])


def test_the_hot_path_runs_on_uvloop_too(redis_url: str, prefix: str) -> None:
    """uvloop (installed with uvicorn[standard]) has transports that are not asyncio's."""
    import uvloop

    from conveyor.redis import connect

    async def main() -> list[list[str]]:
        client = connect(redis_url)
        conn = RespConnection.like(client)
        auto = AutoPipeline(conn)
        echo = client.register_script(ECHO)
        try:
            return list(
                await asyncio.gather(
                    *(auto.call(echo, [f"{prefix}:u"], [str(i)]) for i in range(20))
                )
            )
        finally:
            await conn.close()
            await client.aclose()

    assert uvloop.run(main()) == [[f"{prefix}:u", str(i)] for i in range(20)]


async def test_a_transaction_runs_whole_even_after_redis_forgot_its_scripts(
    redis: Redis, prefix: str, auto: AutoPipeline
) -> None:
    """MULTI/EXEC on the pipelined connection, its first script by EVALSHA: after SCRIPT FLUSH
    the first try's EVALSHA fails inside EXEC, the EVAL'd check after it sees nothing done,
    and the retry runs both."""
    incr = redis.register_script(INCR)
    check = redis.register_script("return redis.call('GET', KEYS[1])")
    key = f"{prefix}:tx"
    await redis.script_flush()
    first, seen = await auto.transaction([(incr, [key], []), (check, [key], [])], by_sha=1)
    assert (first, seen) == (1, "1")
    assert await redis.get(key) == "1"
    # Interleaved with plain calls in the same batches, replies stay with their callers.
    results = await asyncio.gather(
        auto.call(incr, [f"{key}:other"], []),
        auto.transaction([(incr, [key], []), (check, [key], [])], by_sha=1),
        auto.call(incr, [f"{key}:other"], []),
    )
    assert results == [1, [2, "2"], 2]


async def test_a_callback_that_raises_costs_no_other_reply(
    caplog: pytest.LogCaptureFixture, conn: RespConnection
) -> None:
    await conn.connect()
    loop = asyncio.get_running_loop()
    second: asyncio.Future[object] = loop.create_future()

    def broken(reply: object) -> None:
        raise RuntimeError("a caller's bug")

    conn.send([("PING",), ("ECHO", "after")], [broken, second.set_result])
    assert await asyncio.wait_for(second, 5) == "after"
    assert "redis_reply_callback_failed" in caplog.messages
    assert await conn.execute_many([("PING",)]) == ["PONG"]


async def test_an_argument_that_cannot_be_sent_fails_only_its_own_call(
    redis: Redis, prefix: str, auto: AutoPipeline
) -> None:
    echo = redis.register_script(ECHO)
    await redis.script_load(ECHO)
    for size in (3, 9):  # one end-of-tick batch, then batches sent eagerly
        calls = [auto.call(echo, [f"{prefix}:k"], [str(i)]) for i in range(size)]
        calls.insert(1, auto.call(echo, [f"{prefix}:k"], ["bad-\udc80"]))  # lone surrogate
        calls.insert(2, auto.call(echo, [f"{prefix}:k"], [None]))
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert isinstance(results[1], UnicodeEncodeError)
        assert isinstance(results[2], TypeError)
        good = [r for i, r in enumerate(results) if i not in (1, 2)]
        assert good == [[f"{prefix}:k", str(i)] for i in range(size)]


async def test_an_empty_run_of_commands_answers_at_once_and_pairs_nothing(
    auto: AutoPipeline,
) -> None:
    empty, echoed = await asyncio.gather(auto.commands([]), auto.commands([("ECHO", "a")]))
    assert (empty, echoed) == ([], ["a"])
    with pytest.raises(ValueError, match="at most one"):
        await auto.transaction([], by_sha=2)


async def test_a_name_redis_refuses_leaves_the_connection_working(conn: RespConnection) -> None:
    conn.client_name = "has a space"  # CLIENT SETNAME refuses spaces
    conn.want_client_id = True
    assert await conn.execute_many([("PING",)]) == ["PONG"]
    assert conn.client_id is not None


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_serves_one_asyncio_run_after_another(redis_url: str, queue_name: str) -> None:
    """The pipelined connection of the first loop is dead in the second: it is replaced (the
    old socket, whose loop is gone, is left to the garbage collector, with its warning)."""
    from conveyor.client import QueueClient
    from conveyor.redis import connect

    client = QueueClient(connect(redis_url), queue=queue_name, owns_redis=True)

    async def enqueue() -> str:
        return await asyncio.wait_for(client.enqueue("x", {}), 5)

    first = asyncio.run(enqueue())
    second = asyncio.run(enqueue())
    assert first != second

    async def close() -> None:
        await client.close()

    asyncio.run(close())
    gc.collect()  # the abandoned transport's ResourceWarning, here and not in a later test
