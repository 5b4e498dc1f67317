"""What the manual-hold check costs Redis (docs/flow-control.md): BullMQ's moveToActive as
Conveyor runs it (with ``lua/limit_held.lua`` before it) against the same script without the
check, called alternately on one private redis-server; Redis's own ``usec_per_call`` for each.

    uv run --group bench python -m bench.hold_check --calls 20000 --rounds 5

Each call takes one job from a queue of no-op jobs (the common case: a job is there), so
the measure includes the whole script, not only the check. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import private_redis
from conveyor import JobSpec, QueueClient
from conveyor._bullmq import BullQueue
from conveyor._bullmq.base import pack
from conveyor._bullmq.scripts import _HOLD_CHECK, script_source
from conveyor.clock import now_ms
from conveyor.redis import connect

QUEUE, PREFIX = "holdbench", "hb"


def without_check() -> str:
    """moveToActive's source as Conveyor would run it without the hold check."""
    saved = dict(_HOLD_CHECK)
    _HOLD_CHECK.clear()
    script_source.cache_clear()
    try:
        return script_source("moveToActive")
    finally:
        _HOLD_CHECK.update(saved)
        script_source.cache_clear()


async def measure(url: str, source: str, calls: int) -> float:
    redis = connect(url)
    client = QueueClient(redis, queue=QUEUE, prefix=PREFIX)
    for start in range(0, calls, 1000):
        await client.enqueue_many([JobSpec("noop", {})] * min(1000, calls - start))
    await client.close()
    bull = BullQueue(redis, QUEUE, PREFIX)
    script = redis.register_script(source)
    keys: list[Any] = [*bull._fetch_keys, bull.keys["marker"]]
    await redis.config_resetstat()
    for start in range(0, calls, 100):  # 100 calls a round trip: the client's time stays out
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 100, calls)):
                opts = pack({"token": f"t{n}", "lockDuration": 30_000, "limiter": None})
                await script(keys=keys, args=[bull.base, now_ms(), opts], client=pipe)
            await pipe.execute()
    stats = await redis.info("commandstats")
    await redis.flushdb()
    await redis.aclose()
    return float(stats["cmdstat_evalsha"]["usec_per_call"])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sources = {"with_check": script_source("moveToActive"), "without_check": without_check()}
    assert sources["with_check"] != sources["without_check"]
    results: dict[str, list[float]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as tmp, private_redis("plain", Path(tmp)) as server:
        url = server.url
        for round_no in range(args.rounds):
            for name, source in sources.items():
                usec = await measure(url, source, args.calls)
                results[name].append(usec)
                print(f"round {round_no + 1} {name}: usec_per_call={usec:.2f}", flush=True)
    for name, values in results.items():
        print(f"median {name}: usec_per_call={statistics.median(values):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
