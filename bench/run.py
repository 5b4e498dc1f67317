"""Conveyor's benchmark suite: its worker against the raw Python bullmq Worker, Node.js BullMQ
and taskiq, on one private Redis, one contender after another; writes docs/benchmarks.md.

    uv run --group bench python -m bench.run            # the full run (10-20 minutes)
    uv run --group bench python -m bench.run --quick    # a quick look (3-6 minutes)

Needs node/npm (``npm ci --prefix bench/node`` is run when node_modules is missing) and wrk
for the HTTP rows. Every measurement is repeated (``--repeats``, 3 by default) with the
contenders interleaved, so a busy machine slows them alike; the report gives medians and
ratios to Node.js BullMQ computed within each repeat. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import http_api, report
from bench.enqueue import enqueue_rate
from bench.harness import NODE_DIR, REPO, Store, load_average, machine, private_redis
from bench.scenarios import QUEUE, Contender, delayed, latency, retries, throughput

SECTIONS = ("throughput", "enqueue", "latency", "timeliness")
RESULTS = REPO / "bench" / "results.json"

NODE = Contender("bullmq-node", 100)
CONVEYOR = Contender("conveyor", 10)  # the defaults of `conveyor worker`


def throughput_plan() -> list[tuple[str, Contender, bool]]:
    """(key, contender, failing jobs?) of every throughput run."""
    plan = [
        CONVEYOR,
        Contender("conveyor", 100),
        Contender("conveyor", 10, hooks="none"),
        Contender("conveyor", 10, hooks="logging"),
        Contender("conveyor", 10, hooks="stats"),
        Contender("conveyor", 10, loop="uvloop"),
        Contender("bullmq-python", 1),
        Contender("bullmq-python", 100),
        Contender("bullmq-node", 10),
        NODE,
        Contender("taskiq", 100),
        Contender("conveyor", 10, processes=2),
        Contender("conveyor", 10, processes=4),
        Contender("bullmq-node", 100, processes=2),
    ]
    runs = [(f"throughput/{c.key}", c, False) for c in plan]
    failing = (
        CONVEYOR,
        Contender("conveyor", 10, hooks="none"),
        Contender("conveyor", 10, hooks="none", records=False),
        Contender("bullmq-node", 10),
    )
    runs += [(f"throughput-fail/{c.key}", c, True) for c in failing]
    return runs


LATENCY_CONTENDERS = [
    CONVEYOR,
    Contender("conveyor", 100),
    Contender("bullmq-python", 100),
    NODE,
    Contender("taskiq", 100),
]
TIMELINESS_CONTENDERS = [CONVEYOR, Contender("bullmq-python", 100), NODE]
ENQUEUE_PLAN = [
    (lib, mode)
    for lib in ("conveyor", "bullmq-python", "bullmq-node", "taskiq")
    for mode in ("single", "concurrent", "bulk")
    if not (lib == "taskiq" and mode == "bulk")
]


def ensure_node_modules() -> None:
    if (NODE_DIR / "node_modules" / "bullmq").is_dir():
        return
    print("installing bench/node (npm ci)", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)


class Runner:
    def __init__(self, args: argparse.Namespace, store: Store) -> None:
        self.args = args
        self.store = store
        self.runs: dict[str, list[dict[str, float]]] = {}
        self.errors: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.samples: dict[str, list[float]] = {}

    def measure(self, key: str, call: Callable[[], dict[str, float]]) -> None:
        if self.args.match and not any(m in key for m in self.args.match):
            return
        if self.failures.get(key, 0) >= 2:
            return  # failed twice already: do not spend the time again
        started = time.monotonic()
        try:
            result = call()
        except Exception as exc:
            self.errors[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.failures[key] = self.failures.get(key, 0) + 1
            print(f"  {key}: FAILED {self.errors[key]}", flush=True)
            traceback.print_exc()
            return
        self.runs.setdefault(key, []).append(result)
        shown = " ".join(f"{k}={v:.4g}" for k, v in result.items())
        print(f"  {key}: {shown}  ({time.monotonic() - started:.1f} s)", flush=True)

    def repeat(self, index: int, http_reason: str | None) -> None:
        a = self.args
        if "throughput" in a.only:
            self.throughputs()
        if "enqueue" in a.only:
            self.enqueues(http_reason)
        if "latency" in a.only:
            self.latencies()
        if "timeliness" in a.only:
            self.timeliness()

    def throughputs(self) -> None:
        a = self.args
        for key, contender, fail in throughput_plan():
            self.measure(
                key,
                lambda c=contender, f=fail: throughput(
                    self.store, c, a.jobs, fail=f, cap_s=a.cap_seconds
                ),
            )

    def enqueues(self, http_reason: str | None) -> None:
        a = self.args
        for lib, mode in ENQUEUE_PLAN:
            self.measure(
                f"enqueue/{lib} {mode}",
                lambda lib=lib, mode=mode: {
                    "jobs_per_s": enqueue_rate(self.store.url, QUEUE, lib, mode, a.enqueue_jobs)
                },
            )
            self.store.flush()
        if http_reason is None:
            self.store.flush()
            with http_api.api_server(self.store.url, QUEUE) as port:
                http_api.wrk(http_api.SCENARIOS[0], port, 1)  # warm-up
                for scenario in http_api.SCENARIOS:
                    self.store.flush()
                    self.measure(
                        f"http/{scenario.key}",
                        lambda s=scenario: http_api.wrk(s, port, a.http_seconds),
                    )

    def latencies(self) -> None:
        a = self.args
        for contender in LATENCY_CONTENDERS:
            for mode, rate in (("idle", None), ("load", a.load_rate)):
                key = f"latency-{mode}/{contender.key}"
                count = a.latency_samples if rate is None else int(a.load_rate * a.load_seconds)

                def run(c: Contender = contender, r: float | None = rate, n: int = count,
                        k: str = key) -> dict[str, float]:  # fmt: skip
                    stats, waits = latency(self.store, c, samples=n, rate=r, interval_s=0.003)
                    self.samples[k] = [round(w, 6) for w in waits]  # last repeat, for the plot
                    return stats

                self.measure(key, run)

    def timeliness(self) -> None:
        a = self.args
        for contender in TIMELINESS_CONTENDERS:
            self.measure(
                f"delayed/{contender.key}",
                lambda c=contender: delayed(self.store, c, jobs=a.delayed_jobs),
            )
            self.measure(
                f"retries/{contender.key}",
                lambda c=contender: retries(self.store, c, jobs=a.retry_jobs),
            )


def ratios(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Per key, the median over repeats of (this / Node.js BullMQ in the same repeat)."""
    out: dict[str, float] = {}
    for key, results in runs.items():
        family, _, name = key.partition("/")
        if family == "throughput" or family == "throughput-fail":
            ref_key, metric = f"{family}/{NODE.key}", "jobs_per_s"
            if family == "throughput-fail":
                ref_key = f"{family}/bullmq-node c10"
        elif family == "enqueue":
            ref_key, metric = f"enqueue/bullmq-node {name.split()[-1]}", "jobs_per_s"
        elif family.startswith("latency"):
            ref_key, metric = f"{family}/{NODE.key}", "p99_ms"
        else:
            continue
        reference = runs.get(ref_key, [])
        pairs = [
            r[metric] / ref[metric]
            for r, ref in zip(results, reference, strict=False)
            if ref.get(metric)
        ]
        if pairs:
            out[key] = statistics.median(pairs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs and samples, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None, help="backlog of a throughput run")
    parser.add_argument("--redis", choices=("aof", "plain"), default="aof")
    parser.add_argument(
        "--cap-seconds", type=float, default=None, help="longest throughput run (default 15)"
    )
    parser.add_argument("--redis-server", default=None, help="redis-server binary to start")
    parser.add_argument(
        "--redis-hz", type=int, default=None, help="Redis's hz (default: Redis's own, 10)"
    )
    parser.add_argument("--load-rate", type=float, default=1000.0, help="jobs/s under load")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated parts to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--match",
        default="",
        help="comma-separated substrings: run only measurements whose key has one "
        "(e.g. 'throughput/conveyor c10,node c100')",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the raw figures go")
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite docs/ from bench/results.json"
    )
    args = parser.parse_args()
    if args.report_only:
        written = report.write(json.loads(args.out.read_text()))
        print(f"report: {', '.join(str(p) for p in written)}")
        return
    quick = args.quick
    args.only = args.only.split(",")
    args.match = [m for m in args.match.split(",") if m]
    if not set(args.only) <= set(SECTIONS):
        parser.error(f"--only takes {', '.join(SECTIONS)}")
    args.repeats = args.repeats or (1 if quick else 3)
    args.jobs = args.jobs or (2000 if quick else 10_000)
    args.cap_seconds = args.cap_seconds or (10.0 if quick else 15.0)
    args.enqueue_jobs = 2000 if quick else 5000
    args.latency_samples = 200 if quick else 1000
    args.load_seconds = 1.0 if quick else 2.0
    args.delayed_jobs = 50 if quick else 200
    args.retry_jobs = 5 if quick else 20
    args.http_seconds = 2.0 if quick else 4.0
    command = " ".join(["python -m bench.run", *sys.argv[1:]])
    ensure_node_modules()
    http_reason = http_api.unavailable()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        private_redis(args.redis, Path(tmp), args.redis_server, args.redis_hz) as server,
    ):
        store = Store(server.url)
        info = machine(store, args.redis)
        runner = Runner(args, store)
        loads = [f"start: {load_average()}"]
        for index in range(args.repeats):
            loads.append(f"repeat {index + 1}: {load_average()}")
            print(f"repeat {index + 1}/{args.repeats} (load average {load_average()})", flush=True)
            runner.repeat(index, http_reason)
        loads.append(f"end: {load_average()}")
    medians = {
        key: {m: statistics.median(r[m] for r in results) for m in results[0]}
        for key, results in runner.runs.items()
    }
    doc: dict[str, Any] = {
        "command": command,
        "machine": info,
        "loads": loads,
        "elapsed_s": time.monotonic() - started,
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("no_report", "report_only", "out")
        },
        "http_skipped": http_reason,
        "errors": runner.errors,
        "failures": runner.failures,
        "medians": medians,
        "ratios": ratios(runner.runs),
        "runs": runner.runs,
        "samples": runner.samples,
    }
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"\nresults: {args.out} ({doc['elapsed_s']:.0f} s)")
    if not args.no_report:
        written = report.write(doc)
        print(f"report: {', '.join(str(p) for p in written)}")


if __name__ == "__main__":
    main()
