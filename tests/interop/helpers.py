"""Shared by the interop tests: unicode data, waiting on a state, reading jobs from Node."""

from __future__ import annotations

from typing import Any

from conveyor.client import JobView, QueueClient
from conveyor.jobs import JobState
from conveyor.testing import wait_for_state
from tests.interop.conftest import NodeCall

UNICODE = {
    "text": "héllo wörld ✓ 日本語 🚀",
    "n": 7,
    "pi": 3.25,
    "nested": {"list": [1, 2.5, None, True, "ß"], "empty": {}},
}


async def settled(
    client: QueueClient, job_id: str, state: JobState, timeout: float = 15
) -> JobView:
    """``wait_for_state`` with the interop suite's bound (Node processes start slowly)."""
    return await wait_for_state(client, job_id, state, timeout)


async def node_jobs(node: NodeCall, *ids: str, queue: str | None = None) -> dict[str, Any]:
    return dict((await node("jobs", list(ids), queue=queue))["jobs"])
