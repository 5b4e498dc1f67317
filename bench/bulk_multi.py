"""What a bulk's one MULTI costs Redis: the same adds (``QueueClient``'s addStandardJob calls,
1,000 a bulk) sent in one MULTI/EXEC, as ``enqueue_many`` sends them (all or nothing), or as a
plain pipeline (as Node's ``addBulk`` sends its own, not atomic), with AOF on (appendfsync
everysec, Conveyor's default) and off.

    .venv/bin/python -m bench.bulk_multi --rounds 3 --bulks 50

Each run has a redis-server of its own and sends ``--bulks`` bulks, each prepared just
before it is sent and awaited (the pace of ``enqueue_many`` in a loop); it prints redis-server's
CPU per job over the run (``INFO cpu``), then the medians. ``--hz`` is redis-server's (Conveyor
runs its embedded Redis at 100). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from redis import Redis

from bench.tasks import registry
from conveyor import JobSpec, QueueClient
from conveyor.clock import now_ms
from conveyor.embedded import RedisServer
from conveyor.redis import connect
from conveyor.resp import Command, RespConnection, pack_evalsha

BULK = 1000
MODES = ("multi", "pipeline")


def redis_cpu_s(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run(url: str, mode: str, bulks: int) -> float:
    """Redis CPU µs per job of ``bulks`` bulks sent one way."""
    client = QueueClient(connect(url), queue="bulk", registry=registry, owns_redis=True)
    connection = RespConnection.like(client.redis)
    script = client.bull.add_job_call("x", "noop", "{}", {})[0]
    await connection.execute_many([("SCRIPT", "LOAD", script.script)])
    probe = Redis.from_url(url)
    before = redis_cpu_s(probe)
    for _ in range(bulks):  # each bulk prepared just before it is sent, as enqueue_many does
        prepared = [client.prepare(JobSpec("noop", {})) for _ in range(BULK)]
        calls = [client.bull.add_job_call(i, "noop", d, o, now_ms()) for i, d, o in prepared]
        adds: list[Command] = [pack_evalsha(s.sha, keys, args) for s, keys, args in calls]
        commands = [("MULTI",), *adds, ("EXEC",)] if mode == "multi" else adds
        replies = await connection.execute_many(commands)
        if any(isinstance(reply, Exception) for reply in replies):
            raise SystemExit(f"an add failed: {replies[:3]}")
    used = redis_cpu_s(probe) - before
    probe.close()
    await connection.close()
    await client.close()
    return 1e6 * used / (bulks * BULK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulks", type=int, default=50)
    parser.add_argument("--hz", type=int, default=100)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    for round_no in range(args.rounds):
        for aof in ("yes", "no"):
            for mode in MODES if round_no % 2 == 0 else MODES[::-1]:
                with tempfile.TemporaryDirectory() as tmp:
                    config = ["--appendonly", aof, "--hz", str(args.hz)]
                    server = RedisServer(Path(tmp), extra_args=config).start()
                    try:
                        value = asyncio.run(run(server.url, mode, args.bulks))
                    finally:
                        server.stop()
                results.setdefault((aof, mode), []).append(value)
                print(f"AOF {aof:3} {mode:8} {value:5.1f} µs/job", flush=True)
    print(f"\nRedis CPU µs per job, medians of {args.rounds} runs of {args.bulks} bulks of {BULK}")
    print(f"(hz {args.hz})\n")
    print("| AOF | one MULTI (enqueue_many) | plain pipeline | MULTI / pipeline |")
    print("| --- | ---: | ---: | ---: |")
    for aof in ("yes", "no"):
        multi = statistics.median(results[(aof, "multi")])
        plain = statistics.median(results[(aof, "pipeline")])
        print(f"| {aof} | {multi:.1f} | {plain:.1f} | {multi / plain:.2f}x |")


if __name__ == "__main__":
    main()
