"""The report: markdown tables into docs/benchmarks.md and two PNG plots into docs/img/.

Only the part between the ``bench:worker`` markers is rewritten; the rest of the file (the
HTTP API section and anything else) is left as it is.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from bench.harness import REPO

DOC = REPO / "docs" / "benchmarks.md"
IMG = REPO / "docs" / "img"
START = "<!-- bench:worker:start (written by `python -m bench.run`; edits here are lost) -->"
END = "<!-- bench:worker:end -->"
HEADER = """# Benchmarks

How fast Conveyor is, measured on the project's own machine against what a user would pick
instead. Each section says how to reproduce it.
"""
LABELS = {
    "conveyor": "Conveyor Worker",
    "bullmq-python": "bullmq (Python) Worker",
    "bullmq-node": "BullMQ (Node.js) Worker",
    "taskiq": "taskiq + taskiq-redis",
}
HOOKS = {
    "production": "production (logging + metrics)",
    "none": "no hooks",
    "logging": "logging only",
    "stats": "metrics only",
}


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _change(value: float | None, base: float | None) -> str:
    return f"{(value / base - 1) * 100:+.1f}%" if value and base else "—"


def _busy(loads: list[str]) -> bool:
    """Whether any recorded 1-minute load average (``"label: 1m 5m 15m"``) exceeded 1.5."""
    for entry in loads:
        try:
            if float(entry.split(":", 1)[1].split()[0]) > 1.5:
                return True
        except (IndexError, ValueError):
            continue
    return False


def _describe(key: str) -> tuple[str, str, str]:
    """(contender label, concurrency, processes and options) of a contender key."""
    parts = key.split()
    kind, conc = parts[0], parts[1][1:]
    extras = [p for p in parts[2:]]
    procs = next((p[1:] for p in extras if p.startswith("x")), "1")
    notes = [p.replace("hooks-", "hooks: ") for p in extras if not p.startswith("x")]
    label = LABELS.get(kind, kind)
    if kind == "conveyor" and not any(n.startswith("hooks") for n in notes):
        notes.insert(0, "production hooks")
    return label + (f" ({', '.join(notes)})" if notes else ""), conc, procs


class Section:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.med: dict[str, dict[str, float]] = doc["medians"]
        self.ratio: dict[str, float] = doc["ratios"]
        self.lines: list[str] = []

    def get(self, key: str, metric: str) -> float | None:
        return self.med.get(key, {}).get(metric)

    def out(self, *lines: str) -> None:
        self.lines.extend(lines)

    def intro(self) -> None:
        d = self.doc
        m = d["machine"]
        s = d["settings"]
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.out(
            "## Worker and enqueue",
            "",
            f"Command: `uv run --group bench {d['command']}` (the full run is `make bench`); "
            f"{when}, "
            f"{d['elapsed_s'] / 60:.1f} minutes. Each figure is the median of {s['repeats']} "
            "repeats; the contenders run one after another in every repeat, each in processes "
            "of its own against the same private Redis, flushed between runs. Ratios to "
            "Node.js BullMQ (`x Node`) are taken within each repeat, then the median.",
            "",
            f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}. "
            + (
                "Other work was running on it at the same time (load averages below), so treat "
                "absolute figures as noisy and read the ratios."
                if _busy(d["loads"])
                else "Nothing else of note ran on it (load averages below); the contenders and "
                "Redis share its 2 cores, so read the ratios first."
            ),
            f"- Load average (1, 5, 15 min): {'; '.join(d['loads'])}.",
            f"- Redis {m['redis']}: {m['redis_setup']}.",
            f"- Conveyor {m['conveyor']} on Python {m['python']} (redis-py {m['redis_py']}, "
            f"hiredis {m['hiredis']}); bullmq (Python) {m['bullmq_python']}; BullMQ (Node.js) "
            f"{m['bullmq_node']} with ioredis {m['ioredis']} on Node {m['node']}; taskiq "
            f"{m['taskiq']}.",
            f"- Workload: {s['jobs']:,} no-op jobs enqueued in bulk before the worker starts; "
            "time runs from the worker's go signal to its last finished job (several processes: "
            "first go to last finish). Latency: from just before the enqueue call to the "
            "handler's first line, wall clock across processes.",
            "",
        )

    def throughput(self) -> None:
        self.out(
            "### Processing throughput",
            "",
            "| worker | concurrency | processes | jobs/s | x Node | worker CPU µs/job "
            "| Redis CPU µs/job | worker RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        )
        for key in self.med:
            if not key.startswith("throughput/"):
                continue
            name = key.split("/", 1)[1]
            label, conc, procs = _describe(name)
            done = self.get(key, "jobs_done")
            capped = "\\*" if done is not None and done < self.doc["settings"]["jobs"] else ""
            self.out(
                f"| {label} | {conc} | {procs} | {_f(self.get(key, 'jobs_per_s'))}{capped} "
                f"| {_x(self.ratio.get(key))} | {_f(self.get(key, 'worker_cpu_us_per_job'))} "
                f"| {_f(self.get(key, 'redis_cpu_us_per_job'))} | {_f(self.get(key, 'rss_mb'))} |"
            )
        self.out(
            "",
            "`x Node`: against one Node.js BullMQ process at concurrency 100 (its default is 1; "
            "BullMQ's concurrency guide uses 50 for asynchronous jobs; 10 is measured too). "
            "Worker CPU is summed over processes; RSS is per process, at the end of the run. "
            f"\\*: stopped after {self.doc['settings'].get('cap_seconds', 0):g} s, before "
            "the whole backlog was done; the rate is over the jobs finished by then.",
            "",
        )

    def features(self) -> None:
        base = self.get("throughput/conveyor c10 hooks-none", "jobs_per_s")
        self.out(
            "### What each feature costs (Conveyor, concurrency 10)",
            "",
            "| hooks | jobs/s | change vs no hooks | worker CPU µs/job | change vs no hooks |",
            "| --- | ---: | ---: | ---: | ---: |",
        )
        cpu_base = self.get("throughput/conveyor c10 hooks-none", "worker_cpu_us_per_job")
        for hooks, key in (
            ("none", "throughput/conveyor c10 hooks-none"),
            ("logging", "throughput/conveyor c10 hooks-logging"),
            ("stats", "throughput/conveyor c10 hooks-stats"),
            ("production", "throughput/conveyor c10"),
        ):
            value = self.get(key, "jobs_per_s")
            cpu = self.get(key, "worker_cpu_us_per_job")
            self.out(
                f"| {HOOKS[hooks]} | {_f(value)} | {_change(value, base)} | {_f(cpu)} "
                f"| {_change(cpu, cpu_base)} |"
            )
        self.out(
            "",
            "Throughput is the issue's measure, but on a busy machine it moves by more than "
            "10% from run to run; the worker's CPU time per job is steadier and shows what a "
            "feature costs. With the worker and Redis both near one core each (2 cores in all), "
            "worker CPU per job is what limits jobs/s.",
            "",
            "Lock renewal, the stalled-job check, retries with backoff and delayed-job "
            "promotion are always on. The failedJobs record is written for every permanent "
            "failure: jobs that all fail at once (one attempt) show its cost, against the same "
            "worker with the record script left out (`records-off`, a measurement-only switch "
            "of the bench worker) and against BullMQ, which writes no such record:",
            "",
            "| worker | failing jobs/s | x Node | failing / succeeding jobs/s "
            "| worker CPU µs/job | Redis CPU µs/job |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        )
        for key in self.med:
            if not key.startswith("throughput-fail/"):
                continue
            name = key.split("/", 1)[1]
            ok = self.get(f"throughput/{name.replace(' records-off', '')}", "jobs_per_s")
            bad = self.get(key, "jobs_per_s")
            share = f"{bad / ok:.2f}" if ok and bad else "—"
            label, conc, _ = _describe(name)
            self.out(f"| {label}, concurrency {conc} | {_f(bad)} | "
                     f"{_x(self.ratio.get(key))} | {share} "
                     f"| {_f(self.get(key, 'worker_cpu_us_per_job'))} "
                     f"| {_f(self.get(key, 'redis_cpu_us_per_job'))} |")  # fmt: skip
        self.out("")

    def enqueue(self) -> None:
        self.out(
            "### Enqueue throughput (jobs/s)",
            "",
            "| library | one at a time | x Node | 50 in flight | x Node | bulk (1,000 a call) "
            "| x Node |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        )
        for lib in ("conveyor", "bullmq-python", "bullmq-node", "taskiq"):
            cells = []
            for mode in ("single", "concurrent", "bulk"):
                key = f"enqueue/{lib} {mode}"
                cells += [_f(self.get(key, "jobs_per_s")), _x(self.ratio.get(key))]
            name = (
                "Conveyor QueueClient"
                if lib == "conveyor"
                else LABELS[lib].replace(" Worker", " Queue")
            )
            self.out(f"| {name} | {' | '.join(cells)} |")
        self.out(
            "",
            "Conveyor's client validates each payload against the task's model first. "
            "taskiq has no bulk enqueue.",
            "",
        )
        http = [k for k in self.med if k.startswith("http/")]
        if self.doc.get("http_skipped"):
            self.out(f"HTTP enqueue was not measured: {self.doc['http_skipped']}.", "")
        elif http:
            self.out(
                "Over HTTP (`conveyor api`, one process, driven by wrk on loopback for "
                f"{self.doc['settings']['http_seconds']:g} s; see the HTTP API section for its "
                "own variants):",
                "",
                "| request | jobs/s | request p50 ms | request p99 ms |",
                "| --- | ---: | ---: | ---: |",
            )
            for key in http:
                self.out(
                    f"| {key.split('/', 1)[1]} | {_f(self.get(key, 'jobs_per_s'))} "
                    f"| {_f(self.get(key, 'p50_ms'), 2)} | {_f(self.get(key, 'p99_ms'), 2)} |"
                )
            self.out("")

    def latency(self) -> None:
        s = self.doc["settings"]
        self.out(
            "### Enqueue-to-start latency (ms)",
            "",
            f"Idle: {s['latency_samples']:,} jobs, one every 3 ms, to a waiting worker. "
            f"Under load: an open-loop stream of {s['load_rate']:,.0f} jobs/s for "
            f"{s['load_seconds']:g} s, each enqueued on its own.",
            "",
            "| worker | concurrency | idle p50 | idle p99 | p99 x Node | load p50 | load p99 "
            "| p99 x Node | load jobs/s sent |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        )
        names = [k.split("/", 1)[1] for k in self.med if k.startswith("latency-idle/")]
        for name in names:
            label, conc, _ = _describe(name)
            idle, load = f"latency-idle/{name}", f"latency-load/{name}"
            self.out(
                f"| {label} | {conc} | {_f(self.get(idle, 'p50_ms'), 2)} "
                f"| {_f(self.get(idle, 'p99_ms'), 2)} | {_x(self.ratio.get(idle))} "
                f"| {_f(self.get(load, 'p50_ms'), 2)} | {_f(self.get(load, 'p99_ms'), 2)} "
                f"| {_x(self.ratio.get(load))} | {_f(self.get(load, 'rate'))} |"
            )
        self.out(
            "",
            "`load jobs/s sent`: the rate the producer reached (one Python process, at most 32 "
            "enqueues in flight); below the offered rate when the machine is busy.",
            "",
            "![Latency distribution](img/bench-latency.png)",
            "",
        )

    def timeliness(self) -> None:
        s = self.doc["settings"]
        self.out(
            "### Timeliness of delayed jobs and retries (ms late)",
            "",
            f"Delayed: {s['delayed_jobs']} jobs delayed 50-200 ms, start minus due time. "
            f"Retries: {s['retry_jobs']} jobs failing all 6 attempts with exponential backoff "
            "from 20 ms (ideal total 620 ms): each retry's start minus (previous start + its "
            "delay), and the first-to-last-attempt time. A worker waiting for the next due "
            "job blocks in BZPOPMIN with a timeout, and Redis fires blocking timeouts on its "
            "`hz` clock (every 100 ms at the default hz 10, see the Redis line above), so that "
            "clock bounds how late a due job can start unless the worker keeps its own timer. "
            "Conveyor's worker does: at the due time it ends its own wait with CLIENT UNBLOCK.",
            "",
            "| worker | delayed p50 | delayed p99 | retry p50 | retry p99 | first to last "
            "attempt (ideal 620) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        )
        names = [k.split("/", 1)[1] for k in self.med if k.startswith("delayed/")]
        for name in names:
            label, conc, _ = _describe(name)
            d, r = f"delayed/{name}", f"retries/{name}"
            self.out(
                f"| {label}, concurrency {conc} | {_f(self.get(d, 'p50_ms'), 1)} "
                f"| {_f(self.get(d, 'p99_ms'), 1)} | {_f(self.get(r, 'p50_ms'), 1)} "
                f"| {_f(self.get(r, 'p99_ms'), 1)} | {_f(self.get(r, 'total_ms'))} |"
            )
        self.out("")

    def targets(self) -> None:
        conv = self.ratio.get("throughput/conveyor c10")
        best = max(
            (self.ratio.get(k, 0.0) for k in self.med if k.startswith("throughput/conveyor c")
             and " x" not in k and "hooks" not in k and "uvloop" not in k),
            default=0.0,
        )  # fmt: skip
        idle = self.get("latency-idle/conveyor c10", "p99_ms")
        node_idle = self.get("latency-idle/bullmq-node c100", "p99_ms")
        late = [self.get(f"{family}/conveyor c10", "p99_ms") for family in ("delayed", "retries")]
        node_late = [
            self.get(f"{family}/bullmq-node c100", "p99_ms") for family in ("delayed", "retries")
        ]
        base = self.get("throughput/conveyor c10 hooks-none", "jobs_per_s")
        cpu_base = self.get("throughput/conveyor c10 hooks-none", "worker_cpu_us_per_job")
        variants = (("logging", " hooks-logging"), ("metrics", " hooks-stats"), ("both", ""))
        changes = {
            name: (
                self.get(f"throughput/conveyor c10{suffix}", "jobs_per_s"),
                self.get(f"throughput/conveyor c10{suffix}", "worker_cpu_us_per_job"),
            )
            for name, suffix in variants
        }
        feature_ok = None
        if base and cpu_base and all(v and c for v, c in changes.values()):
            feature_ok = all(v / base >= 0.9 for v, _ in changes.values())  # type: ignore[operator]
        feature_text = "; ".join(
            f"{name}: jobs/s {_change(v, base)}, CPU/job {_change(c, cpu_base)}"
            for name, (v, c) in changes.items()
        )
        with_record = self.get("throughput-fail/conveyor c10 hooks-none", "jobs_per_s")
        without = self.get("throughput-fail/conveyor c10 hooks-none records-off", "jobs_per_s")
        if with_record and without:
            feature_text += (
                f"; failedJobs record (all jobs failing): jobs/s {_change(with_record, without)}"
            )
            if feature_ok is not None:
                feature_ok = feature_ok and with_record / without >= 0.9

        def verdict(ok: bool | None) -> str:
            return "—" if ok is None else ("met" if ok else "**not met**")

        self.out(
            "### Against the targets (issue 8)",
            "",
            "| target | this run | |",
            "| --- | --- | --- |",
            f"| one Conveyor process ≥ one Node.js BullMQ process | default concurrency "
            f"{_x(conv)}, best single-process configuration {_x(best or None)} "
            f"| {verdict(best >= 1 if best else None)} |",
            f"| idle latency p99 < 2 ms at the default concurrency | {_f(idle, 2)} ms "
            f"(Node.js BullMQ: {_f(node_idle, 2)} ms) "
            f"| {verdict(idle < 2 if idle is not None else None)} |",
            f"| delayed job / retry starts within 20 ms of due (p99) | "
            f"{_f(late[0], 1)} / {_f(late[1], 1)} ms (Node.js BullMQ: {_f(node_late[0], 1)} / "
            f"{_f(node_late[1], 1)} ms) "
            f"| {verdict(all(v is not None and v < 20 for v in late) if all(late) else None)} |",
            f"| no feature costs more than 10% throughput (vs no hooks) | {feature_text} "
            f"| {verdict(feature_ok)} |",
            "",
        )

    def missing(self) -> None:
        errors = self.doc.get("errors") or {}
        failures = self.doc.get("failures") or {}
        repeats = self.doc["settings"]["repeats"]
        if not errors:
            return
        self.out("Runs that failed (a figure above, if any, comes from the other repeats):", "")
        for key, error in errors.items():
            count = failures.get(key, 1)
            self.out(f"- `{key}`: failed in {count} of {repeats} repeats; last error: {error}")
        self.out("")

    def render(self) -> str:
        self.intro()
        self.targets()
        self.throughput()
        self.out("![Throughput against worker processes](img/bench-throughput.png)", "")
        self.features()
        self.enqueue()
        self.latency()
        self.timeliness()
        self.missing()
        return "\n".join(self.lines).rstrip() + "\n"


def splice(existing: str, section: str) -> str:
    block = f"{START}\n{section}\n{END}\n"
    if START in existing and END in existing:
        head, rest = existing.split(START, 1)
        _, tail = rest.split(END, 1)
        tail = tail.lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    return existing.rstrip("\n") + "\n\n" + block


def write(doc: dict[str, Any]) -> list[Path]:
    from bench import plots

    IMG.mkdir(parents=True, exist_ok=True)
    written = plots.draw(doc, IMG)
    existing = DOC.read_text() if DOC.exists() else HEADER
    DOC.write_text(splice(existing, Section(doc).render()))
    return [DOC, *written]
