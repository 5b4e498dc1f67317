"""Before and after in one run: this checkout's ``conveyor api`` against another checkout's
(the baseline) and the seed's Node.js API, interleaved run by run.

    git worktree add /work/wt/httpbase <commit> && (cd /work/wt/httpbase && make setup)
    .venv/bin/python bench/api/compare.py --baseline /work/wt/httpbase --rounds 5
    .venv/bin/python bench/api/compare.py --baseline /work/wt/httpbase \\
        --sides base:workers-2,workers-2,node-2 --scenarios "single c=1,single c=50"

A side is a variant of ``bench/api/run.py`` (``default``, ``workers-2``, ``node``, ``node-2``,
...) served from this checkout, or, written ``base:VARIANT``, from the baseline checkout (its
own code and virtualenv). Every round starts each side's server afresh (all against one
private redis-server, AOF on, appendfsync everysec), warms them up, then runs each scenario
against each side in turn, Redis flushed before each run; the order of the sides rotates
from round to round. So a busy machine slows every side alike, and the ratios, taken within
each round, are what to read. Prints every run, then medians over the rounds and medians of
the per-round ratios. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from bench.api.run import (  # noqa: E402
    SCENARIOS,
    VARIANTS,
    Scenario,
    _wait_ready,
    flush,
    stop_server,
    wrk,
)

from conveyor.embedded import RedisServer  # noqa: E402
from conveyor.ports import free_port  # noqa: E402

KEYS = ("rps", "jobs_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
Result = dict[str, float]


def start(side: str, baseline: Path, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    checkout, _, name = side.rpartition(":")
    variant = VARIANTS[name]
    root = baseline if checkout == "base" else REPO
    env = {
        **os.environ,
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_QUEUE": "bench",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        **variant.env,
    }
    if variant.node:
        env.update({"PORT": str(port), "REDIS_URL": redis_url, "QUEUE": "bench"})
        cmd = ["node", str(REPO / "bench" / "api" / "node" / "server.js")]
    else:
        conveyor = str(root / ".venv" / "bin" / "conveyor")
        cmd = [conveyor, "api", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, cwd=root)
    _wait_ready(port, proc)
    return proc


def one_round(
    sides: list[str], scenarios: list[Scenario], args: argparse.Namespace, redis_url: str
) -> dict[str, dict[str, Result]]:
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    results: dict[str, dict[str, Result]] = {side: {} for side in sides}
    try:
        for side in sides:
            port = free_port()
            servers[side] = (start(side, args.baseline, redis_url, port), port)
        for side in sides:
            proc, port = servers[side]
            wrk(scenarios[0], port, args.warmup, proc.pid)
        for scenario in scenarios:
            for side in sides:
                if VARIANTS[side.rpartition(":")[2]].node and scenario.jobs_per_request > 1:
                    continue  # the seed has no bulk endpoint
                proc, port = servers[side]
                flush(redis_url)
                results[side][scenario.name] = wrk(scenario, port, args.duration, proc.pid)
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    return results


def ratio(runs: dict[str, list[dict[str, Result]]], side: str, other: str, s: str, k: str) -> str:
    pairs = [
        (mine[s][k], theirs[s][k])
        for mine, theirs in zip(runs[side], runs.get(other, []), strict=False)
        if s in mine and s in theirs and theirs[s][k]
    ]
    return f"{statistics.median(a / b for a, b in pairs):.2f}x" if pairs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sides", default="base:default,default,node")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS))
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sides = args.sides.split(",")
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    runs: dict[str, list[dict[str, Result]]] = {side: [] for side in sides}
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            for round_no in range(args.rounds):
                shift = round_no % len(sides)
                order = sides[shift:] + sides[:shift]
                for side, result in one_round(order, scenarios, args, redis.url).items():
                    runs[side].append(result)
                    for scenario, m in result.items():
                        print(
                            f"[{round_no + 1}/{args.rounds}] {side:16} {scenario:14} "
                            f"{m['rps']:8.0f} req/s {m['jobs_per_s']:8.0f} jobs/s "
                            f"p50 {m['p50_ms']:6.2f} p99 {m['p99_ms']:6.2f} ms "
                            f"cpu {m['server_cpu_us_per_request']:6.0f} us/req",
                            flush=True,
                        )
                loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            redis.stop()
    base, node = sides[0], next((s for s in sides if s.startswith("node")), "")
    print(f"\nload averages (1, 5, 15 min) at start and after each round: {' | '.join(loads)}")
    print(f"medians of {args.rounds} rounds; ratios are medians of per-round ratios\n")
    print(
        "| side | scenario | requests/s | jobs/s | p50 ms | p99 ms | server CPU µs/req "
        f"| req/s x {base} | req/s x {node} | p99 x {node} |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary: dict[str, dict[str, Result]] = {}
    for side, rounds in runs.items():
        for s in [sc.name for sc in scenarios if all(sc.name in r for r in rounds)]:
            med = {k: statistics.median(r[s][k] for r in rounds) for k in KEYS}
            summary.setdefault(side, {})[s] = med
            print(
                f"| {side} | {s} | {med['rps']:,.0f} | {med['jobs_per_s']:,.0f} | "
                f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                f"{med['server_cpu_us_per_request']:,.0f} | {ratio(runs, side, base, s, 'rps')} | "
                f"{ratio(runs, side, node, s, 'rps')} | {ratio(runs, side, node, s, 'p99_ms')} |"
            )
    if args.out:
        record = {"args": vars(args), "loads": loads, "medians": summary, "runs": runs}
        args.out.write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
