"""Cancelling a job: one script that fails a job not yet running or marks a running one, and
the worker's side of the mark.

BullMQ has no stored form of a cancellation (Node's ``worker.cancelJob`` aborts a job's
``AbortSignal`` inside the process that runs it, and nowhere else), so the request lives in
Conveyor's own keys (``conveyor.keys.cancel_mark``) and in a field of the job hash of Conveyor's
own (``CANCEL_FIELD``, like ``cvDue``; BullMQ readers ignore it). The job itself ends as any
BullMQ job that failed for good: in the failed set, with a ``failedReason`` and a "failed"
event, so Node, Bull Board and the monitor show it as they show any failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from redis.commands.core import AsyncScript

from conveyor import keys, lua
from conveyor._bullmq.base import QueueBase, state_of
from conveyor._bullmq.record import JobRecord
from conveyor.clock import now_ms
from conveyor.failures import FailureStore
from conveyor.jobs import JobState

#: The job hash field that carries a cancel request with the job (JSON: by, reason, at).
CANCEL_FIELD = "cvCancel"
#: How long a running job's mark lives (ms). The worker that runs the job sees it within
#: ``conveyor.worker.cancel.POLL_INTERVAL_S``; if that worker dies first, the job carries the
#: request in its hash, and whoever takes it next fails it at once.
MARK_TTL_MS = 24 * 3600 * 1000
#: The stats totals field that counts cancellations, followed by the task's name.
COUNTER_FIELD = "cancelled:"
#: Longest ``reason`` and ``by`` kept, in characters.
MAX_REASON_LENGTH = 1000
MAX_BY_LENGTH = 200


@dataclass(frozen=True)
class CancelRequest:
    """Who asked for a job to stop, why, and when (ms)."""

    by: str
    reason: str = ""
    at_ms: int = 0

    @property
    def message(self) -> str:
        """What the job's failedReason says after ``JobCancelled: ``."""
        text = f"cancelled by {self.by}"
        return f"{text}: {self.reason}" if self.reason else text

    def to_json(self) -> str:
        return json.dumps({"by": self.by, "reason": self.reason, "at": self.at_ms})

    @classmethod
    def parse(cls, raw: str | None) -> CancelRequest | None:
        """A request as stored (never raises: a mangled one still cancels)."""
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            return cls(str(value["by"]), str(value.get("reason") or ""), int(value.get("at") or 0))
        except (ValueError, TypeError, KeyError):
            return cls(by="unknown", reason=str(raw)[:MAX_REASON_LENGTH])


class CancelOutcome(StrEnum):
    """What a cancel did."""

    #: The job was not running: it is failed now.
    CANCELLED = "cancelled"
    #: The job is running: its worker stops it (within a second) and fails it.
    MARKED = "marked"
    #: The job is running and was asked to stop already: nothing more to do.
    PENDING = "pending"
    #: The job was cancelled already and is failed: nothing more to do.
    DONE = "done"
    #: The job finished (completed, or failed for another reason): nothing changed.
    CONFLICT = "conflict"
    #: No such job.
    MISSING = "missing"


@dataclass(frozen=True)
class CancelResult:
    """A cancel's outcome, and the job's state when the cancel came."""

    outcome: CancelOutcome
    state: JobState

    @property
    def stopping(self) -> bool:
        """The job runs now and is being stopped by its worker."""
        return self.outcome in (CancelOutcome.MARKED, CancelOutcome.PENDING)


@cache
def _cancel_source() -> str:
    # The failure record is written by the same code as a worker's (lua/failure_record.lua),
    # inside the cancel script: one script, so the job is never failed without its record.
    record = lua.source("failure_record")
    return f"local function write_record(KEYS, ARGV)\n{record}\nend\n{lua.source('cancel')}"


def failed_reason(request: CancelRequest) -> str:
    """The failedReason of a cancelled job, as a worker writes it for ``JobCancelled``."""
    return f"JobCancelled: {request.message}"


class QueueCancel(QueueBase):
    """The cancel calls of ``BullQueue``."""

    def cancel_mark(self, job_id: str) -> str:
        return keys.cancel_mark(self.prefix, self.name, job_id)

    async def cancel(
        self, job_id: str, request: CancelRequest, *, records: FailureStore, failed_at_iso: str
    ) -> CancelResult:
        """Cancel ``job_id`` (``lua/cancel.lua`` says how, for each state)."""
        script = self.redis.register_script(_cancel_source())
        job_keys = [self.job_key(job_id)]
        job_keys += self._keys(
            "wait", "paused", "active", "delayed", "prioritized", "waiting-children",
            "completed", "failed", "events", "meta",
        )  # fmt: skip
        job_keys += [self.cancel_mark(job_id), keys.stats_totals(self.prefix, self.name)]
        job_keys += records.record_keys(job_id, self.job_key(job_id))
        args: list[Any] = [
            job_id,
            request.to_json(),
            failed_reason(request),
            request.at_ms or now_ms(),
            MARK_TTL_MS,
            failed_at_iso,
            self.prefix,
            *keys.OTHER_QUEUE_RECORD_SUFFIXES,
            self.name,
            self.base,
            COUNTER_FIELD,
        ]
        outcome, state = await script(keys=job_keys, args=args)
        return CancelResult(
            CancelOutcome(str(outcome)), state_of(state) if state else JobState.UNKNOWN
        )

    async def cancel_requests(self, job_ids: list[str]) -> dict[str, CancelRequest]:
        """The running jobs among ``job_ids`` that are asked to stop (one MGET, on the worker's
        batched connection when it has one)."""
        marks = [self.cancel_mark(job_id) for job_id in job_ids]
        if self._auto is not None:
            (raw,) = await self._auto.commands([("MGET", *marks)])
            if isinstance(raw, Exception):
                raise raw
        else:
            raw = await self.redis.mget(marks)
        found: dict[str, CancelRequest] = {}
        for job_id, value in zip(job_ids, raw or [], strict=False):
            if value is not None:
                text = value.decode() if isinstance(value, bytes) else str(value)
                request = CancelRequest.parse(text)
                if request is not None:
                    found[job_id] = request
        return found

    def cancel_done_call(self, job: JobRecord) -> tuple[AsyncScript, list[str], list[Any]]:
        """For the MULTI that fails a cancelled job: drop its mark, count it (once failed)."""
        script = self.redis.register_script(lua.source("cancel_done"))
        done_keys = [
            self.cancel_mark(job.id),
            self.job_key(job.id),
            self.keys["failed"],
            keys.stats_totals(self.prefix, self.name),
        ]
        return script, done_keys, [job.id, COUNTER_FIELD + job.name]

    async def drop_stale_cancel(self, job_id: str) -> None:
        """Drop a cancel request left on a job that another tool sent back to run (Node's
        ``job.retry()`` keeps fields it does not know)."""
        await self.redis.hdel(self.job_key(job_id), CANCEL_FIELD)


def carries_cancel(job: JobRecord) -> bool:
    """Whether the job hash has a cancel request at all (rare: one dict look-up per job)."""
    return CANCEL_FIELD in job.raw


def requested_on(job: JobRecord) -> CancelRequest | None:
    """The cancel request a job taken again (after a crash, a retry) carries, if any: such a
    job fails at once, without running. A job taken for the first time never has one that
    counts (a cancel fails a job that is not running), and Node's or Conveyor's retry clears
    the attempts started that tell a first take (``ats``)."""
    if job.attempts_started <= 1:
        return None
    raw = job.raw.get(CANCEL_FIELD)
    return CancelRequest.parse(raw) if raw else None
