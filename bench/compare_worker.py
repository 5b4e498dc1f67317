"""Worker throughput before and after in one run: Conveyor's worker from this checkout and from
a baseline checkout, and Node.js BullMQ's Worker, interleaved round by round.

    .venv/bin/python -m bench.compare_worker --baseline /work/wt/base --fail --rounds 5

Each round runs ``bench.scenarios.throughput`` (the same measurement as ``bench.run``'s
throughput rows: a backlog of no-op jobs enqueued in bulk, the worker process told "go",
jobs/s to the last finish, the worker's and Redis's CPU per job) once per side against one
private redis-server (AOF on, appendfsync everysec, as ``bench.run``), flushed before each
run; the order of the sides rotates from round to round. ``--fail``: every job raises and
fails for good (attempts 1), as ``bench.run``'s throughput-fail rows. The Conveyor sides
run ``bench.workers.conveyor_worker`` with ``--hooks`` (production by default) from their
own checkout and .venv; Node runs ``bench/node/worker.mjs``. Prints every run, then
medians and the medians of per-round ratios. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench.harness import Store, private_redis
from bench.scenarios import Contender, throughput

METRICS = ("jobs_per_s", "worker_cpu_us_per_job", "redis_cpu_us_per_job")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--hooks", default="production")
    parser.add_argument("--fail", action="store_true", help="every job fails for good")
    parser.add_argument("--redis", choices=("aof", "plain"), default="aof")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    c = args.concurrency
    contenders = {
        "base": Contender("conveyor", c, hooks=args.hooks, root=args.baseline.resolve()),
        "new": Contender("conveyor", c, hooks=args.hooks),
        "node": Contender("bullmq-node", c),
    }
    sides = list(contenders)
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    loads = [load()]
    with tempfile.TemporaryDirectory() as tmp, private_redis(args.redis, Path(tmp)) as server:
        store = Store(server.url)
        for round_no in range(args.rounds):
            order = sides[round_no % 3 :] + sides[: round_no % 3]
            for side in order:
                result = throughput(store, contenders[side], args.jobs, fail=args.fail)
                runs[side].append(result)
                figures = "  ".join(f"{m}={result[m]:,.1f}" for m in METRICS)
                print(f"[{round_no + 1}/{args.rounds}] {side:5} {figures}", flush=True)
            loads.append(load())
    print(f"\nload averages at start and after each round: {' | '.join(loads)}")
    print(f"medians of {args.rounds} rounds; ratios are medians of per-round ratios\n")
    print("| side | jobs/s | x base | x node | worker CPU us/job | Redis CPU us/job |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for side in sides:
        mine = runs[side]

        def ratio(other: str, mine: list[dict[str, float]] = mine) -> float:
            pairs = zip(mine, runs[other], strict=True)
            return statistics.median(a["jobs_per_s"] / b["jobs_per_s"] for a, b in pairs)

        med = {m: statistics.median(r[m] for r in mine) for m in METRICS}
        print(f"| {side} | {med['jobs_per_s']:,.0f} | {ratio('base'):.2f}x | "
              f"{ratio('node'):.2f}x | {med['worker_cpu_us_per_job']:.0f} | "
              f"{med['redis_cpu_us_per_job']:.0f} |")  # fmt: skip
    if args.out:
        doc = {"args": {k: str(v) for k, v in vars(args).items()}, "loads": loads, "runs": runs}
        args.out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
