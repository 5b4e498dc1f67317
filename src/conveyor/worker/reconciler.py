"""Keeps failure records in step with moves made by other BullMQ tools.

Conveyor's own retry and remove drop a job's record in the same MULTI as the move. Node's
``job.retry()``, Bull Board's retry and retry-all, ``job.remove()`` and ``queue.clean`` run
BullMQ's scripts directly and know nothing of the record. The workers catch up, on their
stalled-check timer (never per job):

1. the queue's event stream: ``waiting`` with ``prev=failed`` (reprocessJob, moveJobsToWait:
   Node's ``job.retry()``, ``queue.retryJobs()``, Bull Board) and ``removed`` (removeJob) name
   the jobs whose records may go; each is dropped by one script that checks, atomically, that
   the job is not in the failed set (again) and the record is this queue's;
2. a sweep of one window of the queue's record index per tick, which drops records whose job
   has left the failed set however that happened: a ``cleaned`` event (its ids are not in the
   stream), events trimmed from the stream (BullMQ keeps about 10,000) or that came while no
   worker ran, failed jobs trimmed by a count in ``removeOnFail``, ``obliterate``. When events
   were missed or ``cleaned`` was seen, the tick walks up to ``MAX_WINDOWS`` windows at once.

So a record outlives its job's failed state by at most one stalled interval (30 s by
default) after an event, and otherwise by the time the sweep needs to come round to it:
``records / SWEEP_BATCH`` intervals (one window per interval, more after a missed event).
Records of jobs that BullMQ removed at the moment they failed (``removeOnFail``), and
records an earlier version wrote without that mark, are left to cleanup's retention.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor._bullmq import BullQueue, event_job_id
from conveyor.failures import FailureStore
from conveyor.log import get_logger

log = get_logger("conveyor.worker")

#: Stream entries read per call, and calls per tick (beyond that the tick skips ahead and
#: leaves the rest to a longer sweep).
EVENTS_PAGE = 1000
MAX_EVENT_PAGES = 10
#: Index entries one sweep step looks at, and steps per tick after missed events.
SWEEP_BATCH = 500
MAX_WINDOWS = 20
#: Job ids per drop script call.
DROP_CHUNK = 500


@dataclass
class ReconcileReport:
    """What one tick did."""

    events_read: int = 0
    dropped_by_event: int = 0
    dropped_by_sweep: int = 0
    #: Whether the tick walked many windows (events were missed, or "cleaned" was seen).
    full_sweep: bool = False


class FailureReconciler:
    """One queue's reconciler; ``await tick()`` on a timer."""

    def __init__(
        self, bull: BullQueue, records: FailureStore, *, start_at: str | None = None
    ) -> None:
        self.bull = bull
        self.records = records
        #: The last stream entry read. None: the first tick starts at the stream's end (what
        #: came before is the sweep's); "0": from the stream's start.
        self._cursor: str | None = start_at
        self._offset = 0

    async def tick(self) -> ReconcileReport:
        report = ReconcileReport()
        missed = False
        if self._cursor is None:
            self._cursor = await self.bull.last_event_id()
            missed = True
        job_ids: list[str] = []
        seen: set[str] = set()
        for _ in range(MAX_EVENT_PAGES):
            entries = await self.bull.read_events(self._cursor, EVENTS_PAGE)
            report.events_read += len(entries)
            for entry_id, fields in entries:
                self._cursor = entry_id
                event = fields.get("event")
                if (event == "waiting" and fields.get("prev") == "failed") or event == "removed":
                    job_id = event_job_id(fields)
                    if job_id and job_id not in seen:
                        seen.add(job_id)
                        job_ids.append(job_id)
                elif event == "cleaned":
                    missed = True
            if len(entries) < EVENTS_PAGE:
                break
        else:  # more than a tick's worth: skip to the end, the sweep covers the rest
            self._cursor = await self.bull.last_event_id()
            missed = True
        for start in range(0, len(job_ids), DROP_CHUNK):
            report.dropped_by_event += await self.records.drop(job_ids[start : start + DROP_CHUNK])
        report.full_sweep = missed
        for _ in range(MAX_WINDOWS if missed else 1):
            step = await self.records.sweep(
                self.records.keys.index, offset=self._offset, limit=SWEEP_BATCH
            )
            assert step is not None
            report.dropped_by_sweep += step.removed
            self._offset += step.kept
            if step.examined < SWEEP_BATCH:
                self._offset = 0  # a pass is complete; the next starts from the oldest
                break
        if report.dropped_by_event or report.dropped_by_sweep:
            log.info(
                "failure_records_reconciled",
                queue=self.bull.name,
                dropped_by_event=report.dropped_by_event,
                dropped_by_sweep=report.dropped_by_sweep,
            )
        return report
