"""The monitor's cancel action (its rw role and action header apply) and the cancelled count in
/metrics."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for_state
from conveyor.worker import Worker
from tests.support.monitor import serve_monitor

ACT = {"X-Conveyor-Action": "1"}


class Empty(BaseModel):
    pass


def tasks() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("ok")
    async def ok(payload: Empty, ctx: JobContext) -> str:
        return "done"

    return registry


async def test_cancel_from_the_monitor_names_the_user_and_is_counted(
    make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    waiting = await client.enqueue("ok", {}, {"delay": 60_000})
    other = await client.enqueue("ok", {}, {"delay": 60_000})
    url = f"/api/queues/{settings.queue}/jobs/{{}}/cancel"
    async with serve_monitor(settings, monitor_users="admin:s3cret:rw,viewer:look:ro") as http:
        bare = await http.post(url.format(waiting), auth=("admin", "s3cret"))
        assert bare.status_code == 403  # no action header: a cross-site form
        viewer = await http.post(url.format(waiting), auth=("viewer", "look"), headers=ACT)
        assert viewer.status_code == 403
        assert await client.get_state(waiting) is JobState.DELAYED

        reply = await http.post(url.format(waiting), auth=("admin", "s3cret"), headers=ACT)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"job_id": waiting, "outcome": "cancelled", "stopping": False}
        view = await client.get_job(waiting)
        assert view.state is JobState.FAILED
        assert view.info.failed_reason == (
            "JobCancelled: cancelled by monitor user admin: from the monitor"
        )
        await client.cancel(other, "by script")
        metrics = (await http.get("/metrics", auth=("viewer", "look"))).text
    line = f'conveyor_jobs_cancelled_total{{queue="{settings.queue}",task="ok"}} 2.0'
    assert line in metrics, metrics


async def test_a_finished_job_is_a_409_from_the_monitor(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
) -> None:
    registry = tasks()
    client = make_client(registry)
    make_worker(registry)
    job_id = await client.enqueue("ok", {})
    await wait_for_state(client, job_id, JobState.COMPLETED)
    async with serve_monitor(settings) as http:
        reply = await http.post(f"/api/queues/{settings.queue}/jobs/{job_id}/cancel", headers=ACT)
        assert reply.status_code == 409, reply.text
        missing = await http.post(f"/api/queues/{settings.queue}/jobs/nope/cancel", headers=ACT)
        assert missing.status_code == 404
    assert await client.get_state(job_id) is JobState.COMPLETED
