"""Enqueue throughput before and after in one run: QueueClient from this checkout and from a
baseline checkout, and Node.js BullMQ's Queue, interleaved round by round.

    .venv/bin/python -m bench.compare_enqueue --baseline /work/wt/httpbase --rounds 5

Each round runs ``bench.enqueue`` (``--mode single``: one job at a time, each awaited;
``bulk``: ``enqueue_many`` / ``addBulk`` of 1,000) once per side and mode, each in a fresh
process, against one private redis-server (AOF on, appendfsync everysec) flushed before each
run; the order of the sides rotates from round to round. Both Conveyor sides run this
checkout's ``bench/enqueue.py`` (the same driver) in their own checkout's virtualenv, so only
the library differs. Besides jobs/s, each run's CPU per job: the enqueuing process's (as it
measures itself over the timed span) and redis-server's (``INFO cpu`` before and after), which
a busy machine disturbs much less than the wall clock. Prints every run, then medians and the
medians of per-round ratios. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from redis import Redis

from bench.harness import NODE_DIR, REPO
from conveyor.embedded import RedisServer

MODES = ("single", "bulk")
#: What each run records: jobs/s, and µs of CPU per job of the enqueuing process and of Redis.
MEASURES = ("rate", "client_us", "redis_us")


def redis_cpu_s(redis: Redis) -> float:
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(
    side: str, baseline: Path, redis: Redis, url: str, mode: str, jobs: int
) -> dict[str, float]:
    """One run of one side: jobs/s and CPU µs per job (the process's own, Redis's)."""
    args = ["--redis", url, "--queue", "cmp", "--mode", mode, "--jobs", str(jobs)]
    if side == "node":
        command = ["node", str(NODE_DIR / "enqueue.mjs"), *args]
    else:
        venv = baseline if side == "base" else REPO
        python = str(venv / ".venv" / "bin" / "python")
        command = [python, "-m", "bench.enqueue", "--lib", "conveyor", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = redis_cpu_s(redis)
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=300
    )
    redis_s = redis_cpu_s(redis) - before  # the whole process's life: connect, warm-up, close
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "rate": float(doc["jobs"]) / float(doc["elapsed_s"]),
        "client_us": 1e6 * float(doc["cpu_s"]) / float(doc["jobs"]),
        "redis_us": 1e6 * redis_s / float(doc["jobs"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single-jobs", type=int, default=5_000)
    parser.add_argument("--bulk-jobs", type=int, default=20_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sides = ["base", "new", "node"]
    runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {m: [] for m in MODES} for s in sides}
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        redis = Redis.from_url(server.url)
        try:
            for round_no in range(args.rounds):
                order = sides[round_no % 3 :] + sides[: round_no % 3]
                for mode in MODES:
                    jobs = args.single_jobs if mode == "single" else args.bulk_jobs
                    for side in order:
                        redis.flushall()
                        run = measure(side, args.baseline, redis, server.url, mode, jobs)
                        runs[side][mode].append(run)
                        print(f"[{round_no + 1}/{args.rounds}] {side:5} {mode:6} "
                              f"{run['rate']:9,.0f} jobs/s  CPU per job: client "
                              f"{run['client_us']:6.1f} us, redis {run['redis_us']:5.1f} us",
                              flush=True)  # fmt: skip
                loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            redis.close()
            server.stop()
    print(f"\nload averages at start and after each round: {' | '.join(loads)}")
    print(f"medians of {args.rounds} rounds; ratios are medians of per-round ratios")
    print("(CPU: µs per job, of the enqueuing process over the timed span and of redis-server over")
    print("the enqueuing process's whole run)\n")
    header = "side | mode | jobs/s | x base | x node | client CPU | x node | Redis CPU | x node"
    print(f"| {header} |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for side in sides:
        for mode in MODES:
            mine, base, node = runs[side][mode], runs["base"][mode], runs["node"][mode]
            row = [side, mode]
            for measure_name in MEASURES:
                values = [run[measure_name] for run in mine]
                per_node = [
                    a[measure_name] / b[measure_name] for a, b in zip(mine, node, strict=True)
                ]
                if measure_name == "rate":
                    per_base = [a["rate"] / b["rate"] for a, b in zip(mine, base, strict=True)]
                    row += [
                        f"{statistics.median(values):,.0f}",
                        f"{statistics.median(per_base):.2f}x",
                    ]
                else:
                    row.append(f"{statistics.median(values):.1f}")
                row.append(f"{statistics.median(per_node):.2f}x")
            print("| " + " | ".join(row) + " |")
    if args.out:
        args.out.write_text(json.dumps({"loads": loads, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
