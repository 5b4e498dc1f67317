"""``conveyor stats``: the queues' counts by state as a table in the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from conveyor.config import Settings
from conveyor.jobs import COUNTED_STATES
from conveyor.services.monitor.inspector import Inspector, QueueSummary
from conveyor.services.redis_connection import QueueConnections, open_checked, redis_url

_COLOURS = {"active": "cyan", "completed": "green", "failed": "red", "delayed": "yellow"}


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


#: States always shown (so columns do not come and go between ``--watch`` frames); the others
#: get a column only when some queue has such jobs.
_ALWAYS = frozenset({"waiting", "delayed", "active", "completed", "failed"})
#: Headers kept short so a usual table fits 80 columns.
_HEADERS = {"prioritized": "prio", "waiting-children": "children", "completed": "done"}


def stats_table(summaries: list[QueueSummary], *, title: str | None = None) -> Table:
    """One row per queue: a column per state in use, workers and the oldest wait."""
    states = [
        s.value
        for s in COUNTED_STATES
        if s.value in _ALWAYS or any(x.counts.get(s.value) for x in summaries)
    ]
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 0),
    )
    table.add_column("queue", no_wrap=True, overflow="fold")
    for state in states:
        table.add_column(
            _HEADERS.get(state, state), justify="right", style=_COLOURS.get(state), no_wrap=True
        )
    table.add_column("workers", justify="right", no_wrap=True)
    table.add_column("oldest", justify="right", no_wrap=True)
    for summary in summaries:
        name = f"{summary.name} [bold yellow](paused)[/]" if summary.paused else summary.name
        table.add_row(
            name,
            *(f"{summary.counts.get(s, 0):,}" for s in states),
            str(summary.workers),
            _age(summary.oldest_waiting_s),
        )
    if len(summaries) > 1:
        table.add_section()
        table.add_row(
            "[bold]total",
            *(f"{sum(x.counts.get(s, 0) for x in summaries):,}" for s in states),
            str(sum(x.workers for x in summaries)),
            _age(max(x.oldest_waiting_s for x in summaries)),
        )
    return table


def _queue_json(summary: QueueSummary) -> dict[str, object]:
    """A queue in the HTTP API's words (``GET /queues/{name}``): snake_case states, whole
    numbers, and the same ``total``; then what only the monitor knows."""
    counts = {
        s.value.replace("-", "_"): int(summary.counts.get(s.value, 0)) for s in COUNTED_STATES
    }
    totals = summary.totals.values()
    return {
        "name": summary.name,
        "paused": summary.paused,
        "counts": counts,
        "total": sum(counts.values()),
        "workers": summary.workers,
        "oldest_waiting_s": round(summary.oldest_waiting_s, 3),
        "totals": {
            name: int(sum(getattr(t, name) for t in totals))
            for name in ("completed", "failed", "retried", "deferred")
        },
    }


def stats_json(summaries: list[QueueSummary]) -> str:
    return json.dumps({"queues": [_queue_json(s) for s in summaries]}, indent=2)


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def show(
    settings: Settings,
    url: str,
    *,
    watch: bool = False,
    interval_s: float = 1.0,
    as_json: bool = False,
    console: Console,
) -> None:
    """Print the table (or JSON) once; with ``watch``, redraw it every ``interval_s``."""
    redis = await open_checked(settings, url)
    conns = QueueConnections(settings, url, redis)
    inspector = Inspector(redis, settings, conns)
    try:
        if not watch:
            summaries = await inspector.overview(totals=as_json)
            if as_json:
                console.print_json(stats_json(summaries))
            else:
                console.print(stats_table(summaries))
            return
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                summaries = await inspector.overview(totals=False)
                if _cancel_requested():
                    # redis-py (8.1) can swallow a cancellation (Ctrl-C) that lands inside one
                    # of its commands: the loop would go on. The task is still marked as
                    # cancelled, so end it here.
                    raise asyncio.CancelledError
                stamp = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
                title = f"conveyor stats · {settings.prefix} · {stamp} · every {interval_s:g}s"
                live.update(stats_table(summaries, title=title), refresh=True)
                await asyncio.sleep(interval_s)
    finally:
        await conns.aclose()
        await redis.aclose()


def run(
    settings: Settings,
    *,
    watch: bool = False,
    interval_s: float = 1.0,
    as_json: bool = False,
    console: Console | None = None,
) -> None:
    """Print the table once, or refresh it every ``interval_s`` until Ctrl-C with ``watch``."""
    out = console or Console()
    with redis_url(settings) as url, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            show(settings, url, watch=watch, interval_s=interval_s, as_json=as_json, console=out)
        )
