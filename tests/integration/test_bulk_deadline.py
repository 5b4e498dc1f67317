"""A bulk that Redis committed is never answered 503: the Redis bound grows with the batch,
and a commit cut off anyway is proven by the receipt its MULTI writes. Real app, real Redis;
a short CONVEYOR_API_REDIS_TIMEOUT_S stands in for a batch at the allowed maximum."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.services.api.models import EnqueueRequest
from tests.support.api import api_client

JOBS = 5000
#: Keeps Redis busy for ARGV[1] microseconds.
BUSY_LUA = """
local t = redis.call("TIME")
local start = t[1] * 1000000 + t[2]
repeat
  local now = redis.call("TIME")
until now[1] * 1000000 + now[2] - start > tonumber(ARGV[1])
return 1
"""


def bulk(count: int) -> dict[str, object]:
    return {"jobs": [{"name": "simulate", "data": {"duration_ms": 5}}] * count}


async def total(queue: QueueClient) -> int:
    return sum((await queue.counts()).values())


async def test_the_bound_of_a_bulk_grows_with_its_size(
    settings: Settings, redis_url: str, redis: Redis, queue: QueueClient
) -> None:
    """Redis is busy for 300 ms (a script on another connection) when a 2,000-job bulk goes
    out under a 50 ms bound: the batch's own allowance (0.5 ms a job) outlasts it, so the
    jobs are added (the fixed 50 ms alone answered TimeoutError, then 503)."""
    async with api_client(
        settings, redis_url, api_redis_timeout_s=0.05, api_bulk_max_jobs=JOBS
    ) as api:
        state = api._transport.app.state.api  # type: ignore[attr-defined]
        request = EnqueueRequest(name="simulate", data={"duration_ms": 5})
        prepared = [state.enqueuer.prepare(request, None, i) for i in range(2000)]
        busy = redis.connection_pool.make_connection()
        await busy.connect()
        try:
            await busy.send_command("EVAL", BUSY_LUA, 0, 300_000)
            accepted = await state.enqueuer.add_bulk(prepared)
            assert await busy.read_response() == 1
        finally:
            await busy.disconnect()
    assert len(accepted) == 2000
    assert await total(queue) == 2000


async def test_a_big_bulk_under_a_short_bound_is_answered_201(
    settings: Settings, redis_url: str, queue: QueueClient
) -> None:
    async with api_client(
        settings, redis_url, api_redis_timeout_s=0.05, api_bulk_max_jobs=JOBS
    ) as api:
        response = await api.post("/enqueue/bulk", json=bulk(JOBS), timeout=60)
    assert response.status_code == 201, response.text
    assert await total(queue) == JOBS


@pytest.mark.parametrize("key", [None, "bulk-key"])
async def test_a_commit_cut_off_by_the_bound_is_answered_as_committed(
    settings: Settings, redis_url: str, queue: QueueClient, key: str | None
) -> None:
    """No allowance per job: the 50 ms bound runs out while Redis runs the MULTI. The answer
    must agree with Redis: 201 with every job, or 503 with none, never 503 with the jobs."""
    headers = {"Idempotency-Key": key} if key else {}
    async with api_client(
        settings,
        redis_url,
        api_redis_timeout_s=0.05,
        api_redis_bulk_ms_per_job=0,
        api_bulk_max_jobs=JOBS,
    ) as api:
        response = await api.post("/enqueue/bulk", json=bulk(JOBS), headers=headers, timeout=60)
    held = await total(queue)
    assert (response.status_code, held) in ((201, JOBS), (503, 0)), response.text


@pytest.mark.parametrize("sent_exec", [True, False])
async def test_the_commit_proof_waits_for_what_the_cut_connection_sent(
    settings: Settings, redis_url: str, redis: Redis, sent_exec: bool
) -> None:
    """What the receipt check relies on, with the timing made certain: a connection sends its
    MULTI (with or without the EXEC) while Redis is busy, then closes. Redis still runs what
    it sent, and the check answers only once that connection is gone: committed exactly when
    the EXEC was sent."""
    async with api_client(settings, redis_url) as api:
        enqueuer = api._transport.app.state.api.enqueuer  # type: ignore[attr-defined]
        receipt = f"{settings.prefix}:{settings.queue}:conveyor:bulk:test"
        cut = redis.connection_pool.make_connection()
        busy = redis.connection_pool.make_connection()
        await cut.connect()
        await busy.connect()
        try:
            await cut.send_command("CLIENT", "ID")
            cut_id = int(await cut.read_response())
            await busy.send_command("EVAL", BUSY_LUA, 0, 300_000)
            commands = [("MULTI",), ("SET", receipt, 1), *([("EXEC",)] if sent_exec else [])]
            await cut.send_packed_command(cut.pack_commands(commands))
            await cut.disconnect()
            assert await enqueuer._committed(receipt, cut_id) is sent_exec
            assert await busy.read_response() == 1
        finally:
            await busy.disconnect()


async def test_a_cut_off_commit_answers_a_deduplicated_job_with_the_job_redis_kept(
    settings: Settings, redis_url: str, redis: Redis, queue: QueueClient
) -> None:
    """The bound runs out while Redis is busy (a script on another connection) and the bulk's
    MULTI waits behind it; the receipt then proves the commit. A job of that bulk whose
    deduplication id was taken was not added: the answer must say so and give the id of the
    job Redis holds, never an id no job has (an accepted job missing from the queue)."""
    dedup = {"deduplication": {"id": "once"}}
    first = await queue.enqueue("echo", {}, dedup)
    async with api_client(settings, redis_url, api_redis_bulk_ms_per_job=0) as api:
        # A first bulk opens the lean connection bulks go on, so the next one's MULTI is
        # written at once and only its answer waits for Redis; then the bound becomes 50 ms.
        warm = await api.post("/enqueue/bulk", json={"jobs": [{"name": "echo"}]})
        assert warm.status_code == 201, warm.text
        state = api._transport.app.state.api  # type: ignore[attr-defined]
        state.enqueuer.gate.timeout_s = 0.05
        busy = redis.connection_pool.make_connection()
        await busy.connect()
        try:
            await busy.send_command("EVAL", BUSY_LUA, 0, 300_000)
            body = {"jobs": [{"name": "echo", "options": dedup}, {"name": "echo"}]}
            response = await api.post("/enqueue/bulk", json=body)
            assert await busy.read_response() == 1
        finally:
            await busy.disconnect()
    assert response.status_code == 201, response.text
    duplicate, new = response.json()["jobs"]
    assert duplicate["id"] == first
    assert duplicate["deduplicated"] is True
    assert duplicate["created"] is False
    assert new["created"] is True
    held = set(await queue.bull.get_range([JobState.WAITING], 0, -1))
    assert held == {first, warm.json()["jobs"][0]["id"], new["id"]}
