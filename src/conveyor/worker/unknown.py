"""Jobs whose task this worker does not know: put back for a worker that does.

During a rolling deploy, or with two apps on one queue, a worker takes jobs meant for another.
Failing them would destroy that work, so the job goes back to the delayed set (BullMQ's
moveToDelayed with skipAttempt: not an attempt) with a growing delay, and fails for good only
when no worker has taken it for ``unknown_task_timeout_s`` since it was first put back.

Two fields on the job's hash carry the state across workers (Node's BullMQ ignores them):
``cvUnknownSince`` (ms, the first put-back) and ``cvUnknownCount``. They are written in the same
script as the move, so a worker dying at any point leaves either the active job, locked (the
stalled-job check recovers it as any other), or the delayed job with its fields.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Job hash fields (Conveyor's own, beside BullMQ's).
SINCE_FIELD = "cvUnknownSince"
COUNT_FIELD = "cvUnknownCount"
#: The first put-back waits this long, doubling each time up to the cap.
BASE_DELAY_MS = 1_000
MAX_DELAY_MS = 60_000


@dataclass(frozen=True)
class Deferral:
    """Put the job back: run again in ``delay_ms``; write ``fields`` to its hash."""

    delay_ms: int
    count: int
    fields: dict[str, str]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def next_deferral(raw: dict[str, str], now_ms: int, timeout_s: float) -> Deferral | None:
    """How to put back a job of an unknown task (``raw``: its hash), or None when it has
    waited ``timeout_s`` since its first put-back and fails for good now."""
    since = _int(raw.get(SINCE_FIELD))
    count = (_int(raw.get(COUNT_FIELD)) or 0) + 1
    if since is not None and now_ms - since >= timeout_s * 1000:
        return None
    delay = min(BASE_DELAY_MS * 2 ** min(count - 1, 16), MAX_DELAY_MS)
    fields = {COUNT_FIELD: str(count)}
    if since is None:
        fields[SINCE_FIELD] = str(now_ms)
    return Deferral(delay_ms=delay, count=count, fields=fields)
