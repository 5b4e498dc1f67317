"""Tasks for process-level tests (CONVEYOR_TASKS=tests.support.tasks).

Handlers record side effects in Redis (at CONVEYOR_REDIS_URL) so a test can count how many
times each job really ran, across processes.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.redis import connect
from conveyor.registry import JobContext, TaskRegistry
from conveyor.tasks.builtin import registry as builtin

registry = TaskRegistry().merge(builtin)

_redis: Redis | None = None


def _client() -> Redis:
    global _redis
    if _redis is None:
        # A read timeout longer than any pause a test imposes on a worker (SIGSTOP, a blocked
        # event loop, a loaded machine): with the default 5 s, a HINCRBY whose reply was not
        # yet read when the process was stopped timed out at SIGCONT and redis-py's retry sent
        # it again, counting one execution twice (a chaos test saw "ran twice" this way).
        _redis = connect(os.environ["CONVEYOR_REDIS_URL"], timeout_s=60)
    return _redis


class CountPayload(BaseModel):
    key: str
    sleep_ms: int = 0


@registry.task("count")
async def count(payload: CountPayload, ctx: JobContext) -> int:
    """Count each execution of each job in the hash ``payload.key`` (field = job id)."""
    await _client().hincrby(payload.key, ctx.job_id, 1)
    if payload.sleep_ms:
        await asyncio.sleep(payload.sleep_ms / 1000)
    await _client().hincrby(payload.key + ":done", ctx.job_id, 1)
    return ctx.attempt


@registry.task("sync_count")
def sync_count(payload: CountPayload, ctx: JobContext) -> int:
    """The same as ``count`` from a sync handler (runs in the worker's thread pool)."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"])
    client.hincrby(payload.key, ctx.job_id, 1)
    time.sleep(payload.sleep_ms / 1000)
    client.hincrby(payload.key + ":done", ctx.job_id, 1)
    client.close()
    return ctx.attempt


@registry.task("sync_poll")
def sync_poll(payload: CountPayload, ctx: JobContext) -> int:
    """Counts its start like ``count``, then polls ``ctx.cancelled`` (for up to ``sleep_ms``);
    a cancel it saw is counted in ``payload.key + ":cancelled"``."""
    import redis as sync_redis

    client = sync_redis.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"])
    client.hincrby(payload.key, ctx.job_id, 1)
    deadline = time.monotonic() + payload.sleep_ms / 1000
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    field = ":cancelled" if ctx.cancelled else ":done"
    client.hincrby(payload.key + field, ctx.job_id, 1)
    client.close()
    return ctx.attempt


class Empty(BaseModel):
    pass


@registry.task("hang", timeout_s=1)
async def hang(payload: Empty, ctx: JobContext) -> None:
    """Never finishes by itself: only the task's timeout ends it."""
    await asyncio.Event().wait()


@registry.task("block_loop")
async def block_loop(payload: Empty, ctx: JobContext) -> None:
    """Blocks the event loop (a blocking call inside async code): only the watchdog helps."""
    await _client().hincrby("chaos:blocked", ctx.job_id, 1)
    time.sleep(3600)  # noqa: ASYNC251  (the point of the test)


@registry.task("hog_memory")
async def hog_memory(payload: Empty, ctx: JobContext) -> None:
    """Allocates until the process's memory limit says no (a leak in async code: it yields).

    ``bytes(n)`` takes zeroed pages from the kernel without writing them, so the limit (on
    address space) is reached in well under a millisecond whatever the machine's load.
    ``bytearray(n)`` writes every byte: at load 10 its 23 chunks took 4.4 s, longer than the
    test's 2 s lock, which this process's own renewals must keep while it is at its limit."""
    hoard = []
    while True:
        hoard.append(bytes(32 * 1024 * 1024))
        await asyncio.sleep(0)


@registry.task("fail_first")
async def fail_first(payload: Empty, ctx: JobContext) -> str:
    """Fails its first attempt, then succeeds: a job completed after a retry."""
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return "fine on attempt 2"


@registry.task("exit_process", retries=0)
async def exit_process(payload: Empty, ctx: JobContext) -> None:
    """A hostile task: tries to end the worker process."""
    raise SystemExit(3)


@registry.task("sync_interrupt", retries=0)
def sync_interrupt(payload: Empty, ctx: JobContext) -> None:
    """A hostile sync task (in the worker's thread pool): raises KeyboardInterrupt."""
    raise KeyboardInterrupt


# --- flow control (tests/chaos/test_flow_control.py) ------------------------------------------
#: Adds this run to the running set, keeps the largest size seen. KEYS: running, max.
_ENTER = """
redis.call('SADD', KEYS[1], ARGV[1])
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


class FlowPayload(BaseModel):
    key: str
    sleep_ms: int = 0
    #: Another key whose running set counts this run too (a queue-wide count beside a task's).
    also: str | None = None


async def _probe(payload: FlowPayload, ctx: JobContext) -> None:
    client = _client()
    run = f"{os.getpid()}:{ctx.job_id}"
    keys = [payload.key] + ([payload.also] if payload.also else [])
    for key in keys:
        await client.eval(_ENTER, 2, key + ":running", key + ":max", run)
    await client.rpush(payload.key + ":starts", int(time.time() * 1000))
    await client.sadd(payload.key + ":pids", os.getpid())
    if payload.sleep_ms:
        await asyncio.sleep(payload.sleep_ms / 1000)
    for key in keys:
        await client.srem(key + ":running", run)
    await client.rpush(payload.key + ":done", ctx.job_id)


@registry.task("flow_probe", retries=0)
async def flow_probe(payload: FlowPayload, ctx: JobContext) -> None:
    """Records when each run starts (``key:starts``, ms) and how many runs overlap at most
    across processes (``key:max``; the running set ``key:running`` holds pid:job id)."""
    await _probe(payload, ctx)


@registry.task("flow_probe_solo", retries=0, concurrency=1)
async def flow_probe_solo(payload: FlowPayload, ctx: JobContext) -> None:
    """``flow_probe`` with a per-task concurrency of 1."""
    await _probe(payload, ctx)


# --- crash recovery (tests/chaos/test_recovery.py) -------------------------------------------
class BlockPayload(BaseModel):
    key: str
    block_ms: int
    sleep_ms: int = 0


@registry.task("block_briefly")
async def block_briefly(payload: BlockPayload, ctx: JobContext) -> int:
    """``count`` that first blocks the event loop for ``block_ms`` (no heartbeat meanwhile)."""
    await _client().hincrby(payload.key, ctx.job_id, 1)
    time.sleep(payload.block_ms / 1000)  # noqa: ASYNC251  (the point of the test)
    await asyncio.sleep(payload.sleep_ms / 1000)
    await _client().hincrby(payload.key + ":done", ctx.job_id, 1)
    return ctx.attempt
