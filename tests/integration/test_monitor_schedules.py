"""The monitor's schedules against a real Redis: its list (next and last run, lag), run now
and remove (behind the action header), and the lag in /metrics, which grows while no worker
takes a due run and drops to 0 once one does."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.config import Settings
from conveyor.registry import JobContext, TaskRegistry
from conveyor.schedules import Schedule
from conveyor.scheduling import Schedules
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.support.monitor import serve_monitor

ACTION = {"X-Conveyor-Action": "1"}


def _lag(text: str, schedule: str) -> float | None:
    for family in text_string_to_metric_families(text):
        if family.name == "conveyor_schedule_lag_seconds":
            for sample in family.samples:
                if sample.labels["schedule"] == schedule:
                    return float(sample.value)
    return None


async def test_schedules_panel_actions_and_lag_metric(
    redis: Redis, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()

    @registry.task("beat")
    async def beat(payload: object, ctx: JobContext) -> None: ...

    schedules = Schedules(BullQueue(redis, settings.queue, settings.prefix), registry)
    await schedules.put(Schedule(id="due", task="beat", every_ms=60_000))  # due now
    await schedules.put(Schedule(id="later", task="beat", cron="0 0 1 1 *", tz="Europe/Paris"))
    async with serve_monitor(settings) as http:
        rows = (await http.get(f"/api/queues/{settings.queue}/schedules")).json()["schedules"]
        assert [r["id"] for r in rows] == ["due", "later"]  # soonest first
        assert rows[1]["cron"] == "0 0 1 1 *"
        assert rows[1]["lag_ms"] == 0

        # No worker yet: the due run waits and its lag grows.
        await wait_for(lambda: _lag_of(http, "due"), timeout=10)
        metrics = (await http.get("/metrics")).text
        assert (_lag(metrics, "due") or 0) > 0
        assert _lag(metrics, "later") == 0

        make_worker(registry)
        await wait_for(lambda: _lag_is_zero(http, settings, "due"), timeout=10)
        assert _lag((await http.get("/metrics")).text, "due") == 0
        row = (await http.get(f"/api/queues/{settings.queue}/schedules")).json()["schedules"][0]
        assert row["last_job_id"].startswith("repeat:due:")
        assert row["last_run_ms"] is not None

        refused = await http.post(f"/api/queues/{settings.queue}/schedules/later/run")
        assert refused.status_code == 403  # no action header: nothing done
        ran = await http.post(f"/api/queues/{settings.queue}/schedules/later/run", headers=ACTION)
        assert ran.status_code == 200, ran.text
        assert await redis.exists(f"{settings.prefix}:{settings.queue}:{ran.json()['job_id']}")

        gone = await http.delete(f"/api/queues/{settings.queue}/schedules/later", headers=ACTION)
        assert gone.status_code == 200
        missing = await http.delete(f"/api/queues/{settings.queue}/schedules/later", headers=ACTION)
        assert missing.status_code == 404
        assert missing.json()["type"] == "urn:conveyor:problem:schedule-not-found"
        assert [s.id for s in await schedules.all()] == ["due"]


async def _lag_of(http: httpx.AsyncClient, schedule: str) -> bool:
    text = (await http.get("/metrics")).text
    return (_lag(text, schedule) or 0) > 0


async def _lag_is_zero(http: httpx.AsyncClient, settings: Settings, schedule: str) -> bool:
    rows = (await http.get(f"/api/queues/{settings.queue}/schedules")).json()["schedules"]
    return any(r["id"] == schedule and r["lag_ms"] == 0 for r in rows)
