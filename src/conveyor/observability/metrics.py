"""Prometheus exposition of the queues, built fresh for every scrape.

The monitor reads a snapshot of every queue from Redis (counts by state, workers, and the
counters and histograms the workers' ``StatsHooks`` keep), then ``render_metrics`` turns it
into the text format through a collector of its own on a registry of its own: nothing global,
and the numbers are those of all workers on all hosts, not of one process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from conveyor._bullmq import FlowState
from conveyor.observability.schedule_metrics import ScheduleCollector, ScheduleMetrics
from conveyor.observability.stats import TaskTotals

#: The Content-Type of ``render_metrics``'s output.
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class QueueMetrics:
    """What one scrape knows about one queue."""

    queue: str
    counts: Mapping[str, int]
    paused: bool = False
    workers: int = 0
    #: Age of the oldest waiting job (seconds), 0 when none waits.
    oldest_waiting_s: float = 0.0
    totals: Mapping[str, TaskTotals] = field(default_factory=dict)
    #: The queue-wide limits and whether they hold the queue back (None: not read).
    flow: FlowState | None = None


def _limit_metrics() -> dict[str, GaugeMetricFamily]:
    return {
        "rate_max": GaugeMetricFamily(
            "conveyor_queue_rate_limit_max",
            "Queue-wide rate limit: jobs started per window (absent: no rate limit).",
            labels=["queue"],
        ),
        "rate_window": GaugeMetricFamily(
            "conveyor_queue_rate_limit_window_seconds",
            "Queue-wide rate limit: the window (absent: no rate limit).",
            labels=["queue"],
        ),
        "concurrency": GaugeMetricFamily(
            "conveyor_queue_concurrency_limit",
            "Queue-wide concurrency: jobs active at once (absent: no limit).",
            labels=["queue"],
        ),
        "held_back": GaugeMetricFamily(
            "conveyor_queue_held_back",
            "1 while the queue is held back: by its rate limit (reason rate), by a "
            "RateLimited or Node rateLimit hold (hold), by its concurrency (concurrency).",
            labels=["queue", "reason"],
        ),
        "limited": GaugeMetricFamily(
            "conveyor_queue_limited_seconds",
            "Time until the rate limit or hold lets workers start jobs again, 0 when none.",
            labels=["queue"],
        ),
    }


def _add_limits(metrics: dict[str, GaugeMetricFamily], queue: str, flow: FlowState) -> None:
    rate = flow.limits.rate
    if rate is not None:
        metrics["rate_max"].add_metric([queue], rate.max)
        metrics["rate_window"].add_metric([queue], rate.duration_ms / 1000)
    if flow.limits.concurrency is not None:
        metrics["concurrency"].add_metric([queue], flow.limits.concurrency)
    limited = flow.limited_ms > 0
    metrics["held_back"].add_metric([queue, "rate"], 1 if limited and not flow.held else 0)
    metrics["held_back"].add_metric([queue, "hold"], 1 if limited and flow.held else 0)
    metrics["held_back"].add_metric([queue, "concurrency"], 1 if flow.maxed else 0)
    metrics["limited"].add_metric([queue], flow.limited_ms / 1000)


class SnapshotCollector(Collector):
    """A collector over one snapshot (a new one per scrape)."""

    def __init__(self, queues: Sequence[QueueMetrics]) -> None:
        self.queues = queues

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "conveyor_queue_jobs", "Jobs in the queue by state.", labels=["queue", "state"]
        )
        paused = GaugeMetricFamily(
            "conveyor_queue_paused", "1 when the queue is paused.", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "conveyor_queue_oldest_waiting_seconds",
            "Age of the oldest waiting job (queue latency), 0 when none waits.",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "conveyor_workers", "Workers connected to the queue.", labels=["queue"]
        )
        counters = {
            name: CounterMetricFamily(f"conveyor_jobs_{name}", help_text, labels=["queue", "task"])
            for name, help_text in (
                ("completed", "Jobs completed."),
                ("failed", "Jobs failed for good (no attempts left, or unrecoverable)."),
                ("retried", "Failed attempts sent back for a retry."),
                (
                    "deferred",
                    "Jobs put back (not an attempt) by a worker that does not know their task.",
                ),
                ("cancelled", "Jobs cancelled (failed as cancelled, before or while running)."),
            )
        }
        run = HistogramMetricFamily(
            "conveyor_job_run_seconds", "Run time of each attempt.", labels=["queue", "task"]
        )
        wait = HistogramMetricFamily(
            "conveyor_job_wait_seconds",
            "Time from each attempt's due time (enqueue, end of a delay or of a retry's "
            "backoff) to its start.",
            labels=["queue", "task"],
        )
        limits = _limit_metrics()
        for queue in self.queues:
            if queue.flow is not None:
                _add_limits(limits, queue.queue, queue.flow)
            for state, count in queue.counts.items():
                depth.add_metric([queue.queue, state], count)
            paused.add_metric([queue.queue], 1 if queue.paused else 0)
            oldest.add_metric([queue.queue], queue.oldest_waiting_s)
            workers.add_metric([queue.queue], queue.workers)
            for task, totals in sorted(queue.totals.items()):
                labels = [queue.queue, task]
                counters["completed"].add_metric(labels, totals.completed)
                counters["failed"].add_metric(labels, totals.failed)
                counters["retried"].add_metric(labels, totals.retried)
                counters["deferred"].add_metric(labels, totals.deferred)
                counters["cancelled"].add_metric(labels, totals.cancelled)
                run.add_metric(labels, totals.run.cumulative(), totals.run.sum_s)
                wait.add_metric(labels, totals.wait.cumulative(), totals.wait.sum_s)
        yield from (depth, paused, oldest, workers, *limits.values())
        yield from (*counters.values(), run, wait)


def render_metrics(
    queues: Sequence[QueueMetrics], schedules: Sequence[ScheduleMetrics] = ()
) -> bytes:
    """The Prometheus text format of a snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(queues))
    registry.register(ScheduleCollector(schedules))
    return generate_latest(registry)
