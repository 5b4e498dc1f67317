"""The two figures of the report: throughput against worker processes, latency distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {
    "conveyor": "#1f6fb4",
    "bullmq-node": "#d9541a",
    "bullmq-python": "#6a9f2a",
    "taskiq": "#8e44ad",
}
NAMES = {
    "conveyor": "Conveyor",
    "bullmq-node": "BullMQ (Node.js)",
    "bullmq-python": "bullmq (Python)",
    "taskiq": "taskiq",
}


def _throughput(doc: dict[str, Any], path: Path) -> None:
    med = doc["medians"]
    series: dict[str, list[tuple[int, float]]] = {}
    singles: list[tuple[str, float]] = []
    for key, values in med.items():
        if not key.startswith("throughput/"):
            continue
        parts = key.split("/", 1)[1].split()
        kind, conc, extras = parts[0], parts[1], parts[2:]
        processes = next((int(p[1:]) for p in extras if p.startswith("x")), 1)
        options = [p for p in extras if not p.startswith("x")]
        if not options:
            series.setdefault(f"{kind} {conc}", []).append((processes, values["jobs_per_s"]))
        if processes == 1:
            label = f"{NAMES[kind]} {conc}" + (f" {' '.join(options)}" if options else "")
            singles.append((label, values["jobs_per_s"]))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.3]}
    )
    for name, points in sorted(series.items()):
        if len(points) < 2:
            continue
        points.sort()
        kind, conc = name.split()
        xs, ys = zip(*points, strict=True)
        left.plot(
            xs, ys, marker="o", color=COLORS[kind], label=f"{NAMES[kind]}, {conc} per process"
        )
        for x, y in points:
            left.annotate(
                f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8
            )
    left.set_xlabel("worker processes")
    left.set_ylabel("jobs/s")
    left.set_title("Throughput against worker processes")
    left.set_xticks(sorted({x for pts in series.values() for x, _ in pts}))
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    singles.sort(key=lambda item: item[1])
    labels = [s[0] for s in singles]
    values = [s[1] for s in singles]
    colors = [COLORS[next(k for k, v in NAMES.items() if label.startswith(v))] for label in labels]
    bars = right.barh(labels, values, color=colors)
    right.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8, padding=3)
    right.set_xlabel("jobs/s (one process)")
    right.set_title("One worker process")
    right.tick_params(axis="y", labelsize=8)
    right.grid(axis="x", alpha=0.3)
    right.set_xlim(0, max(values, default=1) * 1.15)
    fig.suptitle(f"{doc['settings']['jobs']:,} no-op jobs, medians of {doc['settings']['repeats']}"
                 f" repeats, {doc['machine']['cores']} cores", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(doc: dict[str, Any], path: Path) -> None:
    samples: dict[str, list[float]] = doc["samples"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, mode, title in (
        (axes[0], "idle", "Idle worker"),
        (axes[1], "load", f"Under load ({doc['settings']['load_rate']:,.0f} jobs/s offered)"),
    ):
        for key, values in sorted(samples.items()):
            family, _, name = key.partition("/")
            if family != f"latency-{mode}" or not values:
                continue
            kind, conc = name.split()[:2]
            ms = sorted(max(v * 1000, 0.01) for v in values)
            ys = [(i + 1) / len(ms) for i in range(len(ms))]
            style = "-" if conc != "c100" or kind != "conveyor" else "--"
            ax.plot(ms, ys, style, color=COLORS[kind], label=f"{NAMES[kind]} {conc}")
        ax.set_xscale("log")
        ax.set_xlabel("enqueue to handler start (ms, log scale)")
        ax.set_title(title)
        ax.axhline(0.99, color="grey", lw=0.7, ls=":")
        ax.axhline(0.5, color="grey", lw=0.7, ls=":")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("fraction of jobs started (CDF)")
    fig.suptitle("Enqueue-to-start latency (dotted lines: p50 and p99; last repeat)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(doc: dict[str, Any], folder: Path) -> list[Path]:
    out = [folder / "bench-throughput.png", folder / "bench-latency.png"]
    _throughput(doc, out[0])
    _latency(doc, out[1])
    return out
