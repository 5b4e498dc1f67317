"""The monitor's JSON answers as typed models: FastAPI checks each answer against its model and
the monitor's OpenAPI document (``/api/openapi.json``) describes them.

Field names and shapes are the ones the dashboard (static/app.js) reads.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Me(BaseModel):
    """Who is asking, and the dashboard's settings."""

    user: str | None
    role: str
    can_act: bool
    auth: bool = Field(description="Whether the monitor asks for credentials.")
    refresh_s: float
    history_minutes: int


class Totals(BaseModel):
    """Attempts counted since the stats began, over every task."""

    completed: int
    failed: int
    retried: int
    deferred: int


class RateLimitView(BaseModel):
    max: int
    duration_ms: int


class QueueLimitsView(BaseModel):
    """The queue-wide limits (docs/flow-control.md) and whether they hold the queue back."""

    rate: RateLimitView | None
    concurrency: int | None
    limited_ms: int = Field(description="ms until the rate limit or a hold lets jobs start.")
    held: bool = Field(description="A manual hold (RateLimited, Node's rateLimit).")
    maxed: bool = Field(description="The concurrency is reached.")


class QueueOverview(BaseModel):
    name: str
    counts: dict[str, int]
    paused: bool
    workers: int
    oldest_waiting_s: float
    totals: Totals
    limits: QueueLimitsView | None = None


class Overview(BaseModel):
    """Every queue's counts (also what ``/api/events`` pushes as ``overview`` events)."""

    queues: list[QueueOverview]


class Worker(BaseModel):
    """A worker connection as Redis's CLIENT LIST shows it."""

    queue: str
    name: str
    addr: str
    age_s: int
    idle_s: int


class Workers(BaseModel):
    workers: list[Worker]


class JobRow(BaseModel):
    """A job as one row of a list: no payload beyond a short preview."""

    id: str
    name: str
    state: str
    timestamp: int
    processed_on: int | None
    finished_on: int | None
    attempts_made: int
    attempts: int = Field(description="The attempts a worker gives the job (conveyor.policy).")
    progress: Any
    delay: int
    priority: int
    failed_reason: str | None
    data_preview: str
    wait_ms: int | None = Field(description="From the last attempt's due time to its start.")
    run_ms: int | None


class JobPage(BaseModel):
    jobs: list[JobRow]
    total: int
    page: int
    size: int
    searched: int | None = Field(description="For a search: how many jobs were looked at.")
    truncated: bool = Field(description="For a search: whether older jobs were not.")


class JobDetail(JobRow):
    """Everything about one job: payload, options, attempts, progress, logs, failure."""

    queue: str
    data: Any
    options: dict[str, Any]
    attempts_started: int
    stalled_count: int
    return_value: Any
    stacktrace: list[str]
    logs: list[str]
    failure_record: dict[str, str] | None
    failure_record_key: str | None


class ErrorGroup(BaseModel):
    pattern: str
    count: int
    example: str
    latest_ms: int
    names: list[str]
    job_ids: list[str]


class ErrorGroups(BaseModel):
    """The newest failed jobs grouped by the pattern of their reason, the biggest first."""

    groups: list[ErrorGroup]
    sampled: int
    total_failed: int
    is_sample: bool


class HistoryPoint(BaseModel):
    t: int = Field(description="Epoch seconds of the step's start.")
    completed: float
    failed: float
    retried: float
    wait_ms: float | None
    run_ms: float | None


class History(BaseModel):
    minutes: int
    step_s: int
    points: list[HistoryPoint]


class JobRetried(BaseModel):
    retried: int
    job_id: str


class JobRemoved(BaseModel):
    removed: int
    job_id: str


class JobCancelled(BaseModel):
    job_id: str
    outcome: str = Field(description="cancelled, marked, pending or done (QueueClient.cancel).")
    stopping: bool = Field(description="It runs: its worker stops it within a second.")


class FailedRetried(BaseModel):
    retried: int
    orphans: int = Field(description="Ids in the failed set whose job hash is gone.")
    orphan_ids: list[str]


class Paused(BaseModel):
    paused: bool


class Retried(BaseModel):
    retried: int


class Removed(BaseModel):
    removed: int


class Health(BaseModel):
    status: str


class CleanupRun(BaseModel):
    """One cleanup run of a queue (``conveyor cleanup``), as its history records it."""

    trigger: str = Field(description="schedule, or manual (conveyor cleanup --once).")
    dry_run: bool
    started_at_ms: int
    duration_ms: int
    failed_retention_s: float
    completed_retention_s: float | None
    failed_jobs_removed: int
    failure_records_removed: int
    completed_jobs_removed: int
    index_entries_dropped: int
    runner: str = Field(description="host:pid of the process that ran it.")


class CleanupHistory(BaseModel):
    """The newest cleanup runs of a queue, newest first (the history keeps the last 100)."""

    last_scheduled_run_ms: int | None = Field(
        description="Start of the last scheduled run; the next is due one interval later."
    )
    runs: list[CleanupRun]
