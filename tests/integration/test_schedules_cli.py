"""``conveyor schedules`` against a real Redis: list, run one now,
remove one; an unknown id is one clear error line."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis
from typer.testing import CliRunner

from conveyor._bullmq import BullQueue
from conveyor.cli import app
from conveyor.config import Settings
from conveyor.redis import connect
from conveyor.schedules import Schedule
from conveyor.scheduling import Schedules


def _env(settings: Settings) -> dict[str, str]:
    return {
        "CONVEYOR_REDIS_URL": str(settings.redis_url),
        "CONVEYOR_QUEUE": settings.queue,
        "CONVEYOR_PREFIX": settings.prefix,
        "COLUMNS": "200",
    }


def _in(settings: Settings, call: object) -> object:
    async def go() -> object:
        redis: Redis = connect(str(settings.redis_url))
        try:
            return await call(Schedules(BullQueue(redis, settings.queue, settings.prefix)), redis)  # type: ignore[operator]
        finally:
            await redis.aclose()

    return asyncio.run(go())


def test_list_run_and_remove(settings: Settings) -> None:
    async def made(schedules: Schedules, redis: Redis) -> None:
        await schedules.put(
            Schedule(id="nightly", task="simulate", cron="0 3 * * *", tz="Asia/Tokyo")
        )
        await schedules.put(
            Schedule(id="often", task="simulate", data={"duration_ms": 1}, every_ms=5000)
        )

    _in(settings, made)
    runner = CliRunner()
    done = runner.invoke(app, ["schedules", "--json"], env=_env(settings))
    assert done.exit_code == 0, done.output
    listed = {s["id"]: s for s in json.loads(done.output)["schedules"]}
    assert set(listed) == {"nightly", "often"}
    assert (listed["nightly"]["cron"], listed["nightly"]["tz"]) == ("0 3 * * *", "Asia/Tokyo")
    assert listed["often"]["every_ms"] == 5000

    table = runner.invoke(app, ["schedules"], env=_env(settings))
    assert table.exit_code == 0, table.output
    assert "0 3 * * * Asia/Tokyo" in table.output

    ran = runner.invoke(app, ["schedules", "--run", "often"], env=_env(settings))
    assert ran.exit_code == 0, ran.output
    job_id = ran.output.strip().split("'")[1]

    async def data_of(schedules: Schedules, redis: Redis) -> object:
        return await redis.hget(f"{settings.prefix}:{settings.queue}:{job_id}", "data")

    assert _in(settings, data_of) == '{"duration_ms":1}'

    removed = runner.invoke(app, ["schedules", "--remove", "often"], env=_env(settings))
    assert removed.exit_code == 0, removed.output

    async def ids(schedules: Schedules, redis: Redis) -> object:
        return [s.id for s in await schedules.all()]

    assert _in(settings, ids) == ["nightly"]

    again = runner.invoke(app, ["schedules", "--remove", "often"], env=_env(settings))
    assert again.exit_code == 1
    assert again.output.strip().splitlines()[-1] == (
        f"conveyor: error: schedule 'often' not found in queue {settings.queue!r}"
    )
