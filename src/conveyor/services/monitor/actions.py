"""What an operator may do from the dashboard, each logged with who did it.

Every action goes through ``QueueClient`` (BullMQ's own scripts), so a retried job is exactly
what Node's ``job.retry()`` makes and its failure record is dropped with it.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import JobNotFoundError, JobStateError
from conveyor.jobs import JobState
from conveyor.log import get_logger
from conveyor.services.monitor.inspector import Inspector
from conveyor.services.monitor.jobs import error_groups

log = get_logger("conveyor.monitor.audit")


class Actions:
    """Retry, remove, pause and resume, for one monitor."""

    def __init__(self, inspector: Inspector, error_sample: int) -> None:
        self.inspector = inspector
        self.error_sample = error_sample

    def _audit(self, action: str, queue: str, user: str | None, **fields: Any) -> None:
        log.info("monitor_action", action=action, queue=queue, user=user or "-", **fields)

    async def retry(self, queue: str, job_id: str, user: str | None) -> dict[str, Any]:
        client = await self.inspector.client(queue)
        await client.retry(job_id)
        self._audit("retry", queue, user, job_id=job_id)
        return {"retried": 1, "job_id": job_id}

    async def remove(self, queue: str, job_id: str, user: str | None) -> dict[str, Any]:
        client = await self.inspector.client(queue)
        await client.remove(job_id)
        self._audit("remove", queue, user, job_id=job_id)
        return {"removed": 1, "job_id": job_id}

    async def cancel(self, queue: str, job_id: str, user: str | None) -> dict[str, Any]:
        """Cancel a job (``QueueClient.cancel``): failed now if it waits, stopped by its
        worker within a second if it runs. The request names the monitor and the user."""
        client = await self.inspector.client(queue)
        result = await client.cancel(job_id, "from the monitor", by=f"monitor user {user or '-'}")
        self._audit("cancel", queue, user, job_id=job_id, outcome=result.outcome.value)
        return {"job_id": job_id, "outcome": result.outcome.value, "stopping": result.stopping}

    async def retry_failed(self, queue: str, user: str | None) -> dict[str, Any]:
        client = await self.inspector.client(queue)
        done = await client.retry_all_failed()
        orphans = len(done.orphans)
        self._audit("retry_all_failed", queue, user, count=done.retried, orphans=orphans)
        if orphans:
            log.warning("failed_set_orphans", queue=queue, count=orphans, sample=done.orphans[:10])
        return {"retried": done.retried, "orphans": orphans, "orphan_ids": done.orphans[:100]}

    async def pause(self, queue: str, user: str | None) -> dict[str, Any]:
        client = await self.inspector.client(queue)
        await client.pause()
        self._audit("pause", queue, user)
        return {"paused": True}

    async def resume(self, queue: str, user: str | None) -> dict[str, Any]:
        client = await self.inspector.client(queue)
        await client.resume()
        self._audit("resume", queue, user)
        return {"paused": False}

    async def _group_ids(self, queue: str, pattern: str) -> list[str]:
        client = await self.inspector.client(queue)
        groups = await error_groups(client, self.error_sample)
        for group in groups.groups:
            if group.pattern == pattern:
                return group.job_ids
        return []

    async def retry_group(self, queue: str, pattern: str, user: str | None) -> dict[str, Any]:
        """Retry the failed jobs (of the sample) whose reason falls in ``pattern``'s group."""
        client = await self.inspector.client(queue)
        count = 0
        for job_id in await self._group_ids(queue, pattern):
            try:
                await client.retry(job_id)
                count += 1
            except (JobNotFoundError, JobStateError):
                continue  # someone else retried or removed it meanwhile
        self._audit("retry_group", queue, user, pattern=pattern, count=count)
        return {"retried": count}

    async def remove_group(self, queue: str, pattern: str, user: str | None) -> dict[str, Any]:
        """Remove the failed jobs (of the sample) whose reason falls in ``pattern``'s group."""
        client = await self.inspector.client(queue)
        count = 0
        for job_id in await self._group_ids(queue, pattern):
            if await client.get_state(job_id) is not JobState.FAILED:
                continue  # retried meanwhile: not ours to remove any more
            try:
                await client.remove(job_id)
                count += 1
            except (JobNotFoundError, JobStateError):
                continue
        self._audit("remove_group", queue, user, pattern=pattern, count=count)
        return {"removed": count}
