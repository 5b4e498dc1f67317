"""``conveyor cleanup``: remove old failed jobs once per interval, or once now (``--once``)."""

from __future__ import annotations

import asyncio
import signal

from redis.asyncio import Redis

from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.maintenance import (
    Cleaner,
    CleanupReport,
    CleanupScheduler,
    RetentionPolicy,
    format_duration,
)
from conveyor.maintenance.retention import iso_ms
from conveyor.services.redis_connection import QueueConnections, open_checked, redis_url


def policy_from(
    settings: Settings,
    *,
    failed_s: float | None = None,
    completed_s: float | None = None,
) -> RetentionPolicy:
    """The settings' retention, with the command line's overrides."""
    return RetentionPolicy(
        failed_s=settings.failed_retention_s if failed_s is None else failed_s,
        completed_s=settings.completed_retention_s if completed_s is None else completed_s,
    )


def scheduler(
    settings: Settings,
    redis: Redis,
    policy: RetentionPolicy | None = None,
    queue: str | None = None,
) -> CleanupScheduler:
    """The schedule of ``queue`` (default: the settings' queue)."""
    cleaner = Cleaner(
        redis,
        queue=queue if queue is not None else settings.queue,
        prefix=settings.prefix,
        failed_key_prefix=settings.failed_key_prefix,
        policy=policy or policy_from(settings),
        batch_size=settings.cleanup_batch_size,
    )
    return CleanupScheduler(redis, cleaner, interval_s=settings.cleanup_interval_s)


async def serve(settings: Settings, url: str) -> None:
    """Run the schedule until SIGTERM or SIGINT. A run in progress finishes first (it is a
    series of short batches); if the process is killed instead, the lease expires and the next
    replica or restart redoes the run (the removal is idempotent)."""
    redis = await open_checked(settings, url)
    conns = QueueConnections(settings, url, redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:  # every queue of CONVEYOR_QUEUES on its own schedule
        schedules = [
            scheduler(settings, await conns.of(queue), queue=queue)
            for queue in settings.queue_weights
        ]
        await asyncio.gather(*(schedule.run_forever(stop) for schedule in schedules))
    finally:
        await conns.aclose()
        await redis.aclose()


async def once(
    settings: Settings, url: str, policy: RetentionPolicy, *, dry_run: bool
) -> list[CleanupReport]:
    """One run now on every queue of CONVEYOR_QUEUES (or CONVEYOR_QUEUE), one report each."""
    redis = await open_checked(settings, url)
    conns = QueueConnections(settings, url, redis)
    try:
        now = now_ms()
        return [
            await scheduler(settings, await conns.of(queue), policy, queue).run_now(
                now, dry_run=dry_run
            )
            for queue in settings.queue_weights
        ]
    finally:
        await conns.aclose()
        await redis.aclose()


def run(settings: Settings) -> int:
    with redis_url(settings) as url:
        asyncio.run(serve(settings, url))
    return 0


def run_once(settings: Settings, policy: RetentionPolicy, *, dry_run: bool) -> list[CleanupReport]:
    with redis_url(settings) as url:
        return asyncio.run(once(settings, url, policy, dry_run=dry_run))


def describe(reports: list[CleanupReport]) -> str:
    """The reports (one per queue) as a few lines each for the terminal."""
    return "\n".join(describe_one(report) for report in reports)


def describe_one(report: CleanupReport) -> str:
    """One queue's report as a few lines for the terminal."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [
        f"{verb} {report.failed_jobs_removed} failed jobs and "
        f"{report.failure_records_removed} failure records from {report.queue!r} "
        f"(failed before {iso_ms(report.failed_cutoff_ms)}, "
        f"older than {format_duration(report.failed_retention_s)})"
    ]
    if report.completed_cutoff_ms is not None and report.completed_retention_s is not None:
        lines.append(
            f"{verb} {report.completed_jobs_removed} completed jobs "
            f"(older than {format_duration(report.completed_retention_s)})"
        )
    if report.index_entries_dropped:
        lines.append(f"{verb} {report.index_entries_dropped} dangling index entries")
    if report.sample_job_ids:
        lines.append("e.g. " + ", ".join(report.sample_job_ids))
    return "\n".join(lines)
