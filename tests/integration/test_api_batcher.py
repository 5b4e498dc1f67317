"""The API's per-tick pipeline batcher, against real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError

from conveyor.ports import free_port
from conveyor.redis import connect
from conveyor.resp import Command
from conveyor.services.api.batcher import PipelineBatcher
from conveyor.services.api.problems import OverloadedError


def set_and_get(key: str, value: int) -> list[Command]:
    return [("SET", key, value), ("GET", key)]


async def test_operations_of_one_tick_share_pipelines_and_get_their_own_results(
    redis: Redis,
) -> None:
    batcher = PipelineBatcher(redis, max_inflight=2, max_pending=1000, timeout_s=5)
    base = uuid.uuid4().hex
    results = await asyncio.gather(
        *(batcher.run(set_and_get(f"{base}:{i}", i)) for i in range(100))
    )
    assert results == [["OK", str(i)] for i in range(100)]
    assert batcher.operations == 100
    assert batcher.batches <= 2
    await batcher.close()


async def test_a_failing_command_fails_only_its_own_operation(redis: Redis) -> None:
    batcher = PipelineBatcher(redis, max_inflight=1, max_pending=100, timeout_s=5)
    key = uuid.uuid4().hex
    await redis.set(key, "a string")

    good, bad, also_good = await asyncio.gather(
        batcher.run(set_and_get(key + ":1", 1)),
        batcher.run([("LPUSH", key, 1)]),
        batcher.run(set_and_get(key + ":2", 2)),
    )
    assert good == ["OK", "1"]
    assert also_good == ["OK", "2"]
    assert isinstance(bad[0], ResponseError)
    assert "WRONGTYPE" in str(bad[0])
    assert batcher.batches == 1
    await batcher.close()


async def test_too_many_waiting_operations_are_refused_at_once(redis: Redis) -> None:
    batcher = PipelineBatcher(redis, max_inflight=1, max_pending=3, timeout_s=5)
    base = uuid.uuid4().hex
    outcomes = await asyncio.gather(
        *(batcher.run(set_and_get(f"{base}:{i}", i)) for i in range(6)),
        return_exceptions=True,
    )
    assert outcomes[:3] == [["OK", str(i)] for i in range(3)]
    assert all(isinstance(o, OverloadedError) for o in outcomes[3:])
    assert await redis.exists(*(f"{base}:{i}" for i in range(3, 6))) == 0
    await batcher.close()


async def test_redis_down_fails_every_operation_of_the_batch() -> None:
    dead = connect(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1)
    batcher = PipelineBatcher(dead, max_inflight=1, max_pending=100, timeout_s=3)
    outcomes = await asyncio.gather(
        *(batcher.run(set_and_get(f"k{i}", i)) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    await batcher.close()
    await dead.aclose()


async def test_close_waits_for_pipelines_on_the_wire(redis: Redis) -> None:
    batcher = PipelineBatcher(redis, max_inflight=1, max_pending=100, timeout_s=5)
    key = uuid.uuid4().hex
    result, _ = await asyncio.gather(batcher.run(set_and_get(key, 7)), batcher.close())
    assert result == ["OK", "7"]
    assert batcher.batches == 1


@pytest.mark.parametrize("inflight", [1, 4])
async def test_more_operations_than_one_batch_all_complete(redis: Redis, inflight: int) -> None:
    batcher = PipelineBatcher(
        redis, max_inflight=inflight, max_pending=10_000, timeout_s=5, max_batch=50
    )
    base = uuid.uuid4().hex
    results = await asyncio.gather(
        *(batcher.run(set_and_get(f"{base}:{i}", i)) for i in range(400))
    )
    assert results == [["OK", str(i)] for i in range(400)]
    assert batcher.batches >= 8
    await batcher.close()


async def test_scripts_flushed_from_redis_are_loaded_again(redis: Redis) -> None:
    """After the first pipeline the batcher skips the SCRIPT EXISTS round trip; when Redis
    has lost its scripts (restart, SCRIPT FLUSH) the commands that failed are sent again."""
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    key = uuid.uuid4().hex

    def incr(by: int) -> list[Command]:
        return [("GET", key), ("EVALSHA", script.sha, 1, key, by)]

    batcher = PipelineBatcher(redis, max_inflight=1, max_pending=100, timeout_s=5)
    assert await batcher.run(incr(1), [script]) == [None, 1]
    assert await batcher.run(incr(2), [script]) == [str(1), 3]
    await redis.script_flush()
    results = await asyncio.gather(
        batcher.run(incr(10), [script]), batcher.run(incr(100), [script])
    )
    assert list(results) == [[str(3), 13], [str(13), 113]]
    assert await redis.get(key) == "113"
    await batcher.close()


async def test_a_pipeline_past_its_deadline_fails_and_its_late_reply_reaches_no_one(
    redis: Redis,
) -> None:
    """Redis still busy with a pipeline when its operations' time is up: they fail at the
    deadline, and its connection is dropped, so the reply that comes later is never taken
    for the next pipeline's."""
    batcher = PipelineBatcher(redis, max_inflight=1, max_pending=100, timeout_s=0.3)
    key = uuid.uuid4().hex
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await batcher.run([("BLPOP", key + ":empty", 2)])
    assert asyncio.get_running_loop().time() - started < 1.5
    assert await batcher.run(set_and_get(key, 5)) == ["OK", "5"]
    await batcher.close()


async def test_a_lone_operation_is_written_before_the_loop_runs_anything_else(
    redis: Redis,
) -> None:
    """With nothing on the wire and nothing waiting, an operation goes out at once instead of
    at the end of the event-loop tick (a lone request pays no batching delay): a command
    queued by another caller in the same tick is answered after it."""
    batcher = PipelineBatcher(redis, max_inflight=4, max_pending=100, timeout_s=5)
    key = uuid.uuid4().hex
    assert await batcher.run([("SET", key, "warm")]) == ["OK"]  # a connection is open now
    first = asyncio.ensure_future(batcher.run([("SET", key, "first")]))
    await asyncio.sleep(0)  # the task's first step: its operation is written
    assert batcher.batches == 1
    second = asyncio.ensure_future(batcher.run([("GET", key)]))
    assert await first == ["OK"]
    assert await second == ["first"]
    assert batcher.batches == 3
    await batcher.close()
