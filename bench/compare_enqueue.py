"""Enqueue throughput before and after in one run: QueueClient from this checkout and from a
baseline checkout, and Node.js BullMQ's Queue, interleaved round by round.

    .venv/bin/python -m bench.compare_enqueue --baseline /work/wt/httpbase --rounds 5

Each round runs ``bench.enqueue`` (``--mode single``: one job at a time, each awaited;
``bulk``: ``enqueue_many`` / ``addBulk`` of 1,000) once per side and mode, each in a fresh
process of its own checkout, against one private redis-server (AOF on, appendfsync
everysec) flushed before each run; the order of the sides rotates from round to round. Prints
every run, then medians and the medians of per-round ratios. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.harness import NODE_DIR, REPO
from conveyor.embedded import RedisServer

MODES = ("single", "bulk")


def rate(side: str, baseline: Path, url: str, mode: str, jobs: int) -> float:
    args = ["--redis", url, "--queue", "cmp", "--mode", mode, "--jobs", str(jobs)]
    if side == "node":
        command, root = ["node", str(NODE_DIR / "enqueue.mjs"), *args], REPO
    else:
        root = baseline if side == "base" else REPO
        python = str(root / ".venv" / "bin" / "python")
        command = [python, "-m", "bench.enqueue", "--lib", "conveyor", *args]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, check=True, timeout=300
    )
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    return float(doc["jobs"]) / float(doc["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--single-jobs", type=int, default=5_000)
    parser.add_argument("--bulk-jobs", type=int, default=20_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sides = ["base", "new", "node"]
    runs: dict[str, dict[str, list[float]]] = {s: {m: [] for m in MODES} for s in sides}
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        port = redis.url.rsplit(":", 1)[1].split("/")[0]
        try:
            for round_no in range(args.rounds):
                order = sides[round_no % 3 :] + sides[: round_no % 3]
                for mode in MODES:
                    jobs = args.single_jobs if mode == "single" else args.bulk_jobs
                    for side in order:
                        subprocess.run(["redis-cli", "-p", port, "FLUSHALL"], check=True,
                                       capture_output=True)  # fmt: skip
                        value = rate(side, args.baseline, redis.url, mode, jobs)
                        runs[side][mode].append(value)
                        print(f"[{round_no + 1}/{args.rounds}] {side:5} {mode:6} "
                              f"{value:9,.0f} jobs/s", flush=True)  # fmt: skip
                loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            redis.stop()
    print(f"\nload averages at start and after each round: {' | '.join(loads)}")
    print(f"medians of {args.rounds} rounds; ratios are medians of per-round ratios\n")
    print("| side | mode | jobs/s | x base | x node |")
    print("| --- | --- | ---: | ---: | ---: |")
    for side in sides:
        for mode in MODES:
            mine = runs[side][mode]
            x_base = statistics.median(a / b for a, b in zip(mine, runs["base"][mode], strict=True))
            x_node = statistics.median(a / b for a, b in zip(mine, runs["node"][mode], strict=True))
            print(f"| {side} | {mode} | {statistics.median(mine):,.0f} | {x_base:.2f}x | "
                  f"{x_node:.2f}x |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"loads": loads, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
