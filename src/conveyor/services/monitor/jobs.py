"""Job lists, search, details and failures grouped by error, as the dashboard shows them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from conveyor._bullmq import JobRecord
from conveyor.client import QueueClient
from conveyor.errors import ConveyorError
from conveyor.jobs import COUNTED_STATES, JobState

#: Jobs one page shows at most.
MAX_PAGE_SIZE = 200
#: Newest jobs of a state that a name search looks through.
SEARCH_WINDOW = 5000
#: Job hashes read per round trip while searching or grouping.
BATCH = 500
#: Characters of a job's data shown in lists, and of a failure reason.
PREVIEW_CHARS = 160
REASON_CHARS = 500
#: Log lines shown on a job's page (the newest).
LOG_LINES = 500

_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_HEX = re.compile(
    r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"
)
_IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_NUMBER = re.compile(r"\b\d+\.\d+\b|\d{4,}")


class InvalidRequestError(ConveyorError):
    """Raised when a monitor request's parameters are wrong (a state, a page, a size)."""


def parse_state(state: str) -> JobState:
    try:
        parsed = JobState(state)
    except ValueError:
        parsed = JobState.UNKNOWN
    if parsed not in COUNTED_STATES:
        allowed = ", ".join(s.value for s in COUNTED_STATES)
        raise InvalidRequestError(f"unknown state {state!r} (one of: {allowed})")
    return parsed


def error_pattern(reason: str | None) -> str:
    """The group key of a failure reason: its first line with ids, addresses and long numbers
    masked, so "timeout after 5012 ms" and "timeout after 5230 ms" fall in one group (short
    numbers such as HTTP statuses are kept apart)."""
    line = (reason or "").strip().splitlines()[0] if (reason or "").strip() else ""
    if not line:
        return "(no reason recorded)"
    line = _UUID.sub("<id>", line[:REASON_CHARS])
    line = _IP.sub("<ip>", line)
    line = _HEX.sub("<hex>", line)
    return _NUMBER.sub("<n>", line)


def _wait_ms(info: JobRecord) -> int | None:
    """From the last attempt's due time to its start; None while that attempt has not begun
    (a retry waiting in delayed: its due time is after the last start)."""  # docs/monitor.md
    if info.processed_on is None or not info.timestamp:
        return None
    wait = info.processed_on - info.due_ms
    return wait if wait >= 0 else None


def _run_ms(info: JobRecord) -> int | None:
    if info.processed_on is None or info.finished_on is None:
        return None
    return max(0, info.finished_on - info.processed_on)


def job_row(info: JobRecord, state: JobState, max_attempts: int) -> dict[str, Any]:
    """A job as one row of a list: no payload beyond a short preview. ``max_attempts`` is
    ``QueueClient.max_attempts`` (``conveyor.policy``): what a worker gives the job."""
    preview = info.raw_data
    return {
        "id": info.id,
        "name": info.name,
        "state": state.value,
        "timestamp": info.timestamp,
        "processed_on": info.processed_on,
        "finished_on": info.finished_on,
        "attempts_made": info.attempts_made,
        "attempts": max_attempts,
        "progress": info.progress,
        "delay": info.delay,
        "priority": info.priority,
        "failed_reason": (info.failed_reason or "")[:REASON_CHARS] or None,
        "data_preview": preview[:PREVIEW_CHARS] + ("…" if len(preview) > PREVIEW_CHARS else ""),
        "wait_ms": _wait_ms(info),
        "run_ms": _run_ms(info),
    }


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, Any]]
    total: int
    page: int
    size: int
    #: For a search: how many jobs were looked at, and whether more were not.
    searched: int | None = None
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "total": self.total,
            "page": self.page,
            "size": self.size,
            "searched": self.searched,
            "truncated": self.truncated,
        }


def check_paging(page: int, size: int) -> None:
    if page < 0:
        raise InvalidRequestError("page must be 0 or more")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"size must be between 1 and {MAX_PAGE_SIZE}")


async def list_jobs(
    client: QueueClient, state: JobState, *, page: int = 0, size: int = 25, search: str = ""
) -> JobPage:
    """A page of a state's jobs, newest first; with ``search``, the jobs whose id or name holds
    it (an exact id is found in any state; names among the newest ``SEARCH_WINDOW``)."""
    check_paging(page, size)
    search = search.strip()
    if search:
        return await _search(client, state, search, page, size)
    total = (await client.counts()).get(state, 0)
    start = page * size
    infos = await client.list_jobs(state, start, start + size - 1)
    rows = [job_row(i, state, client.max_attempts(i)) for i in infos]
    return JobPage(rows, total, page, size)


async def _search(
    client: QueueClient, state: JobState, needle: str, page: int, size: int
) -> JobPage:
    lowered = needle.lower()
    matches: list[tuple[str, JobState]] = []
    exact = await client.find_job(needle)  # None for the queue's own key names
    if exact is not None:
        matches.append((exact.id, await client.get_state(exact.id)))
    ids = await client.bull.get_range([state], 0, SEARCH_WINDOW - 1)
    for offset in range(0, len(ids), BATCH):
        chunk = ids[offset : offset + BATCH]
        async with client.redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.hget(client.bull.job_key(job_id), "name")
            names = await pipe.execute()
        for job_id, name in zip(chunk, names, strict=True):
            if job_id == needle:
                continue
            if lowered in job_id.lower() or (name is not None and lowered in str(name).lower()):
                matches.append((job_id, state))
    total_in_state = (await client.counts()).get(state, 0)
    selected = matches[page * size : (page + 1) * size]
    infos = await client.bull.get_jobs([job_id for job_id, _ in selected])
    states = dict(selected)
    rows = [job_row(info, states[info.id], client.max_attempts(info)) for info in infos]
    return JobPage(
        rows,
        len(matches),
        page,
        size,
        searched=len(ids),
        truncated=total_in_state > len(ids),
    )


async def job_detail(client: QueueClient, job_id: str) -> dict[str, Any]:
    """Everything about one job: payload, options, attempts, progress, logs, failure."""
    view = await client.get_job(job_id)
    info = view.info
    logs = await client.bull.get_logs(job_id, -LOG_LINES, -1)
    found = await client.records.locate(job_id) if view.state is JobState.FAILED else None
    record_key, record = found if found is not None else (None, None)
    return {
        **job_row(info, view.state, client.max_attempts(info)),
        "queue": client.queue,
        "data": info.data,
        "options": info.options,
        "attempts_started": info.attempts_started,
        "stalled_count": info.stalled_count,
        "return_value": info.return_value,
        "failed_reason": info.failed_reason,
        "stacktrace": info.stacktrace,
        "logs": logs,
        "failure_record": record,
        "failure_record_key": record_key,
    }


@dataclass
class ErrorGroup:
    pattern: str
    count: int = 0
    example: str = ""
    latest_ms: int = 0
    names: set[str] = field(default_factory=set)
    job_ids: list[str] = field(default_factory=list)

    def to_json(self, sample_ids: int = 5) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "count": self.count,
            "example": self.example,
            "latest_ms": self.latest_ms,
            "names": sorted(self.names)[:10],
            "job_ids": self.job_ids[:sample_ids],
        }


@dataclass(frozen=True)
class ErrorGroups:
    groups: list[ErrorGroup]
    #: Failed jobs read, and how many the failed set holds.
    sampled: int
    total_failed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [g.to_json() for g in self.groups],
            "sampled": self.sampled,
            "total_failed": self.total_failed,
            "is_sample": self.total_failed > self.sampled,
        }


async def error_groups(client: QueueClient, sample: int) -> ErrorGroups:
    """The newest ``sample`` failed jobs grouped by ``error_pattern`` of their reason, the
    biggest group first."""
    ids = await client.bull.get_range([JobState.FAILED], 0, sample - 1)
    groups: dict[str, ErrorGroup] = {}
    for offset in range(0, len(ids), BATCH):
        for job in await client.bull.failure_summaries(ids[offset : offset + BATCH]):
            pattern = error_pattern(job.failed_reason)
            group = groups.setdefault(pattern, ErrorGroup(pattern))
            group.count += 1
            group.job_ids.append(job.job_id)
            if job.name:
                group.names.add(job.name)
            if job.finished_on >= group.latest_ms or not group.example:
                group.latest_ms = max(group.latest_ms, job.finished_on)
                group.example = (job.failed_reason or "")[:REASON_CHARS]
    total = (await client.counts()).get(JobState.FAILED, 0)
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.pattern))
    return ErrorGroups(ordered, len(ids), total)
