"""What each worker asks of Redis per job: INFO commandstats for Conveyor (this checkout, and
a baseline checkout) and Node.js BullMQ, each against the same private redis-server.

    .venv/bin/python -m bench.commandstats --baseline /work/wt/base --rounds 3

Each run: FLUSHALL, enqueue ``--jobs`` no-op jobs (QueueClient, in bulk), start the worker
process (bench/workers/conveyor_worker.py from its own checkout, or bench/node/worker.mjs)
and wait until it is ready, then ``CONFIG RESETSTAT``, ``go``, and once it reports all jobs
done, ``INFO commandstats`` / ``stats`` / ``cpu``. Per job: calls and µs of each command (a
script's commands are counted apart from the EVALSHA that ran them), read events (about one
per round trip a client makes), and redis-server's CPU (user + sys: the commands plus
parsing, replies and socket system calls). The sides rotate from round to round; prints every
run, then medians. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.harness import NODE_DIR, REDIS_MODES, REPO, private_redis, redis_binary
from bench.scenarios import PREFIX, QUEUE, Contender, Producer

Stats = dict[str, float]


def command(side: str, baseline: Path | None, url: str, args: argparse.Namespace) -> list[str]:
    common = ["--redis", url, "--queue", QUEUE, "--prefix", PREFIX, "--expect", str(args.jobs)]
    if side == "node":
        return ["node", str(NODE_DIR / "worker.mjs"), *common,
                "--concurrency", str(args.node_concurrency or args.concurrency)]  # fmt: skip
    # The same bench code on both sides; the baseline's venv brings its own conveyor.
    root = baseline if side == "base" and baseline is not None else REPO
    return [str(root / ".venv" / "bin" / "python"), "-m", "bench.workers.conveyor_worker",
            *common, "--concurrency", str(args.concurrency), "--hooks", args.hooks]  # fmt: skip


def _callgrind_wrapper(folder: Path) -> str:
    """A redis-server that runs under callgrind (its profile files go to ``folder``)."""
    wrapper = folder / "redis-under-callgrind"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec valgrind --tool=callgrind --callgrind-out-file={folder}/callgrind.%p "
        f'{redis_binary()} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def _callgrind(command: str, pid: int) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True)


def _instructions(pid: int, folder: Path, keep: Path | None, side: str) -> int:
    """Instructions counted since the last zeroing: callgrind dumps them to a new file (a
    copy goes to ``keep``, for callgrind_annotate)."""
    _callgrind("--dump", pid)
    newest = max(folder.glob(f"callgrind.{pid}.*"), key=lambda f: f.stat().st_mtime_ns)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(newest, keep / f"{side}.{newest.name}")
    for line in newest.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {newest}")


def one_run(
    side: str, baseline: Path | None, store: redis.Redis, url: str, args: argparse.Namespace
) -> Stats:
    store.flushall()

    async def enqueue() -> None:
        async with Producer(url, Contender("conveyor", args.concurrency)) as producer:
            if args.fail:  # as bench.run's throughput-fail rows: each job fails for good
                await producer.backlog(args.jobs, {**data, "fail": True}, {"attempts": 1})
            else:
                await producer.backlog(args.jobs, data, {})

    data = {"sleep_ms": args.job_ms} if args.job_ms else {}
    asyncio.run(enqueue())
    proc = subprocess.Popen(
        command(side, baseline, url, args),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        ready = proc.stdout.readline()
        if '"ready"' not in ready:
            raise RuntimeError(f"{side}: not ready ({ready!r})")
        store.config_resetstat()
        pid = int(store.info("server")["process_id"])
        if args.callgrind:
            _callgrind("--zero", pid)
        before = store.info("cpu")
        started = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        report = proc.stdout.readline()
        if '"finished"' not in report:
            raise RuntimeError(f"{side}: no report ({report!r})")
        elapsed = time.monotonic() - started
        stats = store.info("commandstats")
        after = store.info("cpu")
        totals = store.info("stats")
        if args.callgrind:
            instructions = _instructions(pid, args.callgrind_dir, args.callgrind_out, side)
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    jobs = args.jobs
    out: Stats = {}
    for name, row in stats.items():
        cmd = name.removeprefix("cmdstat_")
        if cmd in ("info", "config|resetstat"):
            continue
        out[f"calls {cmd}"] = row["calls"] / jobs
        out[f"us {cmd}"] = row["usec"] / jobs
    out["reads"] = totals["total_reads_processed"] / jobs
    out["commands"] = totals["total_commands_processed"] / jobs
    cpu = sum(float(after[k]) - float(before[k]) for k in ("used_cpu_sys", "used_cpu_user"))
    out["cpu_us"] = cpu / jobs * 1e6
    out["jobs_per_s"] = jobs / elapsed
    if args.callgrind:
        out["instructions"] = instructions / jobs
    return out


def table(runs: dict[str, list[Stats]]) -> str:
    sides = list(runs)

    def med(side: str, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs[side])

    keys = sorted({k.split(" ", 1)[1] for s in sides for r in runs[s] for k in r if " " in k})
    keys.sort(key=lambda c: -max(med(s, f"us {c}") for s in sides))
    head = " | ".join(f"{s} calls/job | {s} µs/job" for s in sides)
    lines = [f"| command | {head} |", "| --- |" + " ---: | ---: |" * len(sides)]
    for c in keys:
        cells = " | ".join(f"{med(s, f'calls {c}'):.3f} | {med(s, f'us {c}'):.2f}" for s in sides)
        lines.append(f"| {c} | {cells} |")
    for label, key in (("commands (all)", "commands"), ("read events", "reads")):
        cells = " | ".join(f"{med(s, key):.3f} | " for s in sides)
        lines.append(f"| {label} | {cells} |")
    # A script's own commands are counted in its EVALSHA's time too: leave those out.
    outer = ("evalsha", "eval", "exec")
    plain = " | ".join(
        f" | {sum(med(s, f'us {c}') for c in keys if c not in outer):.1f}" for s in sides
    )
    lines.append(f"| µs of all commands but EVALSHA/EVAL/EXEC | {plain} |")
    if all("instructions" in r for s in sides for r in runs[s]):
        counted = " | ".join(f" | {med(s, 'instructions'):,.0f}" for s in sides)
        lines.append(f"| redis-server instructions (user space, callgrind) | {counted} |")
    cpu = " | ".join(f" | {med(s, 'cpu_us'):.1f}" for s in sides)
    lines.append(f"| redis-server CPU µs (user + sys) | {cpu} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with (its .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--node-concurrency", type=int, help="default: --concurrency")
    parser.add_argument("--hooks", default="production")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run redis-server under valgrind's callgrind and count its instructions per job "
        "(user space; exact whatever the machine's load, but Redis runs ~50x slower)",
    )
    parser.add_argument("--callgrind-out", type=Path, help="keep callgrind's files here")
    parser.add_argument("--job-ms", type=int, default=0, help="each job takes this long")
    parser.add_argument("--fail", action="store_true", help="every job fails for good")
    parser.add_argument("--redis-mode", choices=REDIS_MODES, default="aof")
    parser.add_argument("--sides", default="", help="comma-separated: new,base,node")
    args = parser.parse_args()
    sides = args.sides.split(",") if args.sides else ["new", "node"]
    if args.baseline is not None and not args.sides:
        sides = ["base", "new", "node"]
    runs: dict[str, list[Stats]] = {s: [] for s in sides}
    loads = [" ".join(f"{x:.2f}" for x in os.getloadavg())]
    with tempfile.TemporaryDirectory() as tmp:
        args.callgrind_dir = Path(tmp)
        binary = _callgrind_wrapper(Path(tmp)) if args.callgrind else None
        with private_redis(args.redis_mode, Path(tmp) / "redis", binary) as server:
            store = redis.Redis.from_url(server.url, decode_responses=True)
            for round_no in range(args.rounds):
                order = sides[round_no % len(sides) :] + sides[: round_no % len(sides)]
                for side in order:
                    result = one_run(side, args.baseline, store, server.url, args)
                    runs[side].append(result)
                    instructions = (
                        f", {result['instructions']:,.0f} instructions/job"
                        if "instructions" in result
                        else ""
                    )
                    print(f"[{round_no + 1}/{args.rounds}] {side:5} redis CPU "
                          f"{result['cpu_us']:.1f} µs/job{instructions}, "
                          f"{result['commands']:.2f} commands/job, {result['reads']:.2f} "
                          f"reads/job, {result['jobs_per_s']:,.0f} jobs/s", flush=True)  # fmt: skip
                loads.append(" ".join(f"{x:.2f}" for x in os.getloadavg()))
            store.close()
    print(f"\nload averages at start and after each round: {' | '.join(loads)}")
    node_c = args.node_concurrency or args.concurrency
    print(
        f"{args.jobs} jobs of {args.job_ms} ms, concurrency {args.concurrency} (node {node_c}),"
        f" hooks {args.hooks}, Redis {args.redis_mode}; medians of {args.rounds} rounds, per job\n"
    )
    print(table(runs))


if __name__ == "__main__":
    main()
