"""A cron schedule with a time zone runs when Node's BullMQ would run it, across both
daylight-saving changes: Conveyor's ``cron.next_cron_ms`` against BullMQ 6.7's own
``getNextMillis`` (cron-parser), run after run, for Paris and New York."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor.cron import next_cron_ms
from tests.interop.conftest import NodeCall

CASES = [
    # spring forward: Paris 2026-03-29 02:00 -> 03:00, New York 2026-03-08 02:00 -> 03:00
    ("30 2 * * *", "Europe/Paris", "2026-03-27T12:00:00Z", 4),
    ("0 9 * * *", "Europe/Paris", "2026-03-27T12:00:00Z", 4),
    ("0 0 * * * *", "Europe/Paris", "2026-03-28T23:00:00Z", 6),
    ("*/20 * * * *", "America/New_York", "2026-03-08T06:00:00Z", 9),
    ("0 2 * * *", "America/New_York", "2026-03-06T12:00:00Z", 4),
    ("15 1-3 * * 0", "America/New_York", "2026-03-01T12:00:00Z", 6),
    # fall back: Paris 2026-10-25 03:00 -> 02:00, New York 2026-11-01 02:00 -> 01:00
    ("30 2 * * *", "Europe/Paris", "2026-10-23T12:00:00Z", 4),
    ("0 30 * * * *", "Europe/Paris", "2026-10-24T23:00:00Z", 6),
    ("*/15 1-3 * * *", "America/New_York", "2026-11-01T04:00:00Z", 14),
    ("30 1 * * *", "America/New_York", "2026-10-30T12:00:00Z", 4),
    ("*/30 * * * *", "America/New_York", "2026-11-01T04:50:00Z", 8),
    # no zone (UTC), seconds, shorthands, last day of month
    ("*/7 * * * * *", None, "2026-01-01T00:00:00.500Z", 12),
    ("@daily", "Asia/Kolkata", "2026-01-01T00:00:00Z", 3),
    ("0 12 L * *", "Australia/Sydney", "2026-01-15T00:00:00Z", 3),
]


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize(("pattern", "tz", "start", "count"), CASES)
async def test_cron_runs_match_nodes_across_dst(
    node: NodeCall, pattern: str, tz: str | None, start: str, count: int
) -> None:
    node_runs = (
        await node("cronNext", {"pattern": pattern, "tz": tz, "from": _ms(start), "count": count})
    )["next"]
    ours: list[int] = []
    after = _ms(start)
    for _ in range(count):
        nxt = next_cron_ms(pattern, tz, after)
        assert nxt is not None
        ours.append(nxt)
        after = nxt

    def shown(runs: list[int]) -> list[str]:
        return [datetime.fromtimestamp(ms / 1000, UTC).isoformat() for ms in runs]

    assert shown(ours) == shown(node_runs)
