"""``conveyor schedules``: the queue's schedules in the terminal (next and last run, lag), and
removing one or running one now."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.table import Table

from conveyor._bullmq import BullQueue, SchedulerRecord
from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.scheduling import Schedules, describe
from conveyor.services.redis_connection import open_checked, redis_url


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def schedule_table(records: list[SchedulerRecord], now: int) -> Table:
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("id", "task", "when", "next run", "last run", "runs", "lag"):
        table.add_column(column, no_wrap=column != "id", overflow="fold")
    for r in records:
        when = f"every {r.every_ms} ms" if r.every_ms else f"{r.pattern} {r.tz or 'UTC'}"
        lag = r.lag_ms(now)
        table.add_row(
            r.id,
            r.name,
            when,
            _when(r.next_ms),
            _when((r.last_run or {}).get("taken_ms")),
            str(r.iterations),
            f"{lag / 1000:.1f}s" if lag else "-",
        )
    return table


async def show(
    settings: Settings,
    url: str,
    *,
    as_json: bool,
    remove: str | None,
    run_now: str | None,
    console: Console,
) -> None:
    redis = await open_checked(settings, url)
    try:
        schedules = Schedules(BullQueue(redis, settings.queue, settings.prefix))
        if remove is not None:
            await schedules.remove(remove)
            console.print(f"removed schedule {remove!r}")
            return
        if run_now is not None:
            job_id = await schedules.run_now(run_now)
            console.print(f"added job {job_id!r}")
            return
        records = await schedules.all()
        now = now_ms()
        if as_json:
            rows = [{**describe(r), "lag_ms": r.lag_ms(now)} for r in records]
            console.print_json(json.dumps({"queue": settings.queue, "schedules": rows}))
        elif not records:
            console.print(f"no schedules on queue {settings.queue!r}")
        else:
            console.print(schedule_table(records, now))
    finally:
        await redis.aclose()


def run(
    settings: Settings,
    *,
    as_json: bool = False,
    remove: str | None = None,
    run_now: str | None = None,
    console: Console | None = None,
) -> None:
    out = console or Console()
    with redis_url(settings) as url:
        asyncio.run(
            show(settings, url, as_json=as_json, remove=remove, run_now=run_now, console=out)
        )
