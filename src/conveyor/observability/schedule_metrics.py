"""Prometheus metrics of the queues' schedules (BullMQ job schedulers), per scrape:
``conveyor_schedule_lag_seconds`` (how late each schedule's due run is; it grows while no
worker takes it) and ``conveyor_schedule_next_run_timestamp_seconds``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class ScheduleMetrics:
    """What one scrape knows about one schedule."""

    queue: str
    schedule: str
    task: str
    lag_s: float
    next_run_s: float | None


class ScheduleCollector(Collector):
    def __init__(self, schedules: Sequence[ScheduleMetrics]) -> None:
        self.schedules = schedules

    def collect(self) -> Iterable[Metric]:
        labels = ["queue", "schedule", "task"]
        lag = GaugeMetricFamily(
            "conveyor_schedule_lag_seconds",
            "How late the schedule's due run is: 0 while on time, growing while no worker "
            "takes it.",
            labels=labels,
        )
        next_run = GaugeMetricFamily(
            "conveyor_schedule_next_run_timestamp_seconds",
            "When the schedule's next run is due (Unix time).",
            labels=labels,
        )
        for s in self.schedules:
            lag.add_metric([s.queue, s.schedule, s.task], s.lag_s)
            if s.next_run_s is not None:
                next_run.add_metric([s.queue, s.schedule, s.task], s.next_run_s)
        yield from (lag, next_run)
