"""How long a SIGKILLed worker's jobs take to run again, for two source trees side by side.

    python -m bench.recovery --before /path/to/old/checkout/src --repeats 3

Each repeat runs every scenario for "before" (``--before``, a ``src`` folder of another
checkout, put first on PYTHONPATH) and "after" (this checkout), one after another, each with
a private redis-server (no persistence) and real ``conveyor worker`` processes with BullMQ's
default lock (30 s) and stalled interval (30 s):

- ``supervised``: ``conveyor worker --processes 2 --concurrency 10``; 10 ``simulate`` jobs of
  2 s; once all run, the child holding most of them gets SIGKILL.
- ``unsupervised``: two ``conveyor worker --concurrency 10`` processes, the same 10 jobs; the
  process holding most gets SIGKILL.

"Recovery" is from the SIGKILL until every job the victim held is locked by another worker
(it runs again), read from the jobs' BullMQ locks every 10 ms; "all done" until all 10 jobs
are completed. Prints a table and writes ``bench/recovery-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.harness import REPO, load_average, private_redis

QUEUE, PREFIX = "benchRecovery", "bench"
JOBS, JOB_MS = 10, 2000
POLL_S = 0.01


def _spawn(src: Path, url: str, tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        PYTHONPATH=f"{src}{os.pathsep}{REPO}",
        CONVEYOR_REDIS_URL=url,
        CONVEYOR_QUEUE=QUEUE,
        CONVEYOR_PREFIX=PREFIX,
        CONVEYOR_DATA_DIR=str(tmp / "data"),
        CONVEYOR_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "worker", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _enqueue(url: str, src: Path) -> list[str]:
    """10 simulate jobs of 2 s, added by the checkout under test's own client."""
    code = (
        "import asyncio, json, sys\n"
        "from conveyor.client import JobSpec, QueueClient\n"
        "from conveyor.redis import connect\n"
        "async def main():\n"
        f"    redis = connect({url!r})\n"
        f"    queue = QueueClient(redis, queue={QUEUE!r}, prefix={PREFIX!r}, pipelined=False)\n"
        f"    spec = JobSpec('simulate', {{'duration_ms': {JOB_MS}}})\n"
        f"    ids = await queue.enqueue_many([spec] * {JOBS})\n"
        "    await redis.aclose()\n"
        "    print(json.dumps(ids))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO}"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    ids: list[str] = json.loads(out.stdout)
    return ids


def _locks(client: redis.Redis, ids: list[str]) -> dict[str, str]:
    tokens = client.mget([f"{PREFIX}:{QUEUE}:{job}:lock" for job in ids])
    return {job: str(token) for job, token in zip(ids, tokens, strict=True) if token}


def _completed(client: redis.Redis) -> int:
    return int(client.zcard(f"{PREFIX}:{QUEUE}:completed"))


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(POLL_S)


def one_run(src: Path, scenario: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-recovery") as folder:
        tmp = Path(folder)
        with private_redis("plain", tmp / "redis") as server:
            url = server.url
            client = redis.Redis.from_url(url, decode_responses=True)
            if scenario == "supervised":
                procs = [_spawn(src, url, tmp, "--processes", "2", "--concurrency", "10")]
            else:
                procs = [_spawn(src, url, tmp, "--concurrency", "10") for _ in range(2)]
            try:
                time.sleep(4)  # the processes start (and beat) before the jobs come
                ids = _enqueue(url, src)
                _wait(lambda: len(_locks(client, ids)) == JOBS, 30, "jobs never all ran")
                held = _locks(client, ids)
                owners = [token.rsplit(":", 1)[0] for token in held.values()]
                victim = max(set(owners), key=owners.count)
                lost = [job for job, token in held.items() if token.startswith(victim + ":")]
                pid = int(victim.split(":")[-2])
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()

                def recovered() -> bool:
                    now = _locks(client, lost)
                    done = client.zmscore(f"{PREFIX}:{QUEUE}:completed", lost)
                    return all(
                        (job in now and not now[job].startswith(victim + ":")) or score
                        for job, score in zip(lost, done, strict=True)
                    )

                _wait(recovered, 120, "the victim's jobs never ran again")
                recovery = time.monotonic() - killed
                _wait(lambda: _completed(client) == JOBS, 120, "not all jobs completed")
                all_done = time.monotonic() - killed
                return {"recovery_s": recovery, "all_done_s": all_done, "dead_jobs": len(lost)}
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="src folder of the old tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default="supervised,unsupervised")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": REPO / "src"}
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    loads = [load_average()]
    for repeat in range(args.repeats):
        for scenario in args.scenarios.split(","):
            for label, src in trees.items():
                run = one_run(src, scenario)
                results.setdefault(scenario, {}).setdefault(label, []).append(run)
                print(f"repeat {repeat + 1} {scenario:12} {label:6} {run}", flush=True)
        loads.append(load_average())
    print("\n| scenario | tree | dead jobs | recovery s (median) | all done s (median) | runs |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for scenario, by_tree in results.items():
        for label, runs in by_tree.items():
            rec = statistics.median(r["recovery_s"] for r in runs)
            done = statistics.median(r["all_done_s"] for r in runs)
            dead = statistics.median(r["dead_jobs"] for r in runs)
            every = ", ".join(f"{r['recovery_s']:.2f}" for r in runs)
            print(f"| {scenario} | {label} | {dead:g} | {rec:.2f} | {done:.2f} | {every} |")
    print("load averages:", "; ".join(loads))
    out = REPO / "bench" / "recovery-results.json"
    out.write_text(
        json.dumps(
            {"trees": {k: str(v) for k, v in trees.items()}, "results": results, "load": loads},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
