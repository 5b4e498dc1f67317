"""The cleanup's run history (``conveyor cleanup`` records every run in Redis)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from conveyor.maintenance import CleanupKeys, read_last_run_ms, read_runs
from conveyor.services.monitor.auth import Viewer
from conveyor.services.monitor.models import CleanupHistory, CleanupRun
from conveyor.services.monitor.state import Monitor

router = APIRouter(prefix="/api", tags=["read"])


@router.get("/queues/{queue}/cleanup")
async def cleanup_history(
    _: Viewer,
    monitor: Monitor,
    queue: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CleanupHistory:
    client = await monitor.inspector.client(queue)  # 404 for an unknown queue
    keys = CleanupKeys.for_queue(monitor.settings.prefix, queue)
    reports = await read_runs(client.redis, keys, limit)
    runs = [
        CleanupRun(
            trigger=r.trigger,
            dry_run=r.dry_run,
            started_at_ms=r.started_at_ms,
            duration_ms=r.duration_ms,
            failed_retention_s=r.failed_retention_s,
            completed_retention_s=r.completed_retention_s,
            failed_jobs_removed=r.failed_jobs_removed,
            failure_records_removed=r.failure_records_removed,
            completed_jobs_removed=r.completed_jobs_removed,
            index_entries_dropped=r.index_entries_dropped,
            runner=r.runner,
        )
        for r in reports
    ]
    last = await read_last_run_ms(client.redis, keys)
    return CleanupHistory(last_scheduled_run_ms=last, runs=runs)
