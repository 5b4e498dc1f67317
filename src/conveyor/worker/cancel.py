"""Stopping running jobs that were cancelled (``QueueClient.cancel``, the API, the monitor).

A cancel of a running job leaves a durable mark in Redis (``conveyor._bullmq.cancel``). Every
worker process looks for the marks of the handlers it runs every ``POLL_INTERVAL_S`` (one
MGET, only while handlers run, on the ticks it shares with the heartbeat: ``ticks``), so a
cancel reaches the job within that interval plus a round trip wherever it runs, and a cancel
made while the worker or Redis is unreachable takes effect when both are back (a pub/sub
message would be lost then). On a mark:

- an async handler's task is cancelled: the handler gets ``asyncio.CancelledError`` at its
  next ``await``;
- a sync handler cannot be interrupted: ``ctx.cancelled`` turns true for it to poll, and the
  worker stops waiting for its thread (abandoned, as after a timeout);

then ``Attempts`` fails the job for good (``JobCancelled``), its mark dropped and the
cancellation counted in the same MULTI as the move to failed. If the process dies first, the
job's lock expires and the stalled check puts it back; the request travels in the job hash,
and the worker that takes it next fails it at once without running it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from conveyor._bullmq import BullQueue, JobRecord
from conveyor._bullmq.cancel import CancelRequest, requested_on
from conveyor.errors import JobCancelled
from conveyor.log import get_logger
from conveyor.worker.stack import describe
from conveyor.worker.ticks import sleep_to_tick

log = get_logger("conveyor.worker")

#: How often a worker looks for cancel marks of the handlers it runs (s). A cancel takes
#: effect within this plus a Redis round trip and the handler's own way to its next await.
#: A divisor of the heartbeat's default 500 ms, so every beat goes out with a look (``ticks``).
POLL_INTERVAL_S = 0.25


class Running(Protocol):
    """What the watch keeps of a running handler: its job's context, where the request goes
    (``ctx.cancelled`` reads it)."""

    cancel_request: CancelRequest | None


class CancelWatch:
    """The handlers a worker process runs now, and the loop that stops cancelled ones.

    Kept lean, as ``started``/``ended`` run for every job: one dict write and one pop (the
    task to cancel is looked up in ``tasks``, the worker's own map of its running jobs, only
    when a cancel comes)."""

    def __init__(self, bull: BullQueue, interval_s: float = POLL_INTERVAL_S) -> None:
        self.bull = bull
        self.interval_s = interval_s
        self._running: dict[str, Running] = {}
        #: Job id -> (lock token, the task running it): the worker's map, set by the worker.
        self.tasks: Mapping[str, tuple[str, asyncio.Task[Any]]] = {}
        #: Looks failed since the last success (a Redis outage is logged once, not 5 times/s).
        self._failures = 0

    def started(self, job_id: str, run: Running) -> None:
        """A handler of ``job_id`` starts (in the task ``tasks`` names for it)."""
        self._running[job_id] = run

    def ended(self, job_id: str) -> CancelRequest | None:
        """The handler of ``job_id`` is over; answers the cancel request it got, if any."""
        run = self._running.pop(job_id, None)
        return run.cancel_request if run is not None else None

    async def run(self) -> None:
        """Look for marks until cancelled (a background task of the worker)."""
        while True:
            await sleep_to_tick(self.interval_s)
            ids = [job_id for job_id, run in self._running.items() if run.cancel_request is None]
            if not ids:
                continue
            try:
                found = await self.bull.cancel_requests(ids)
            except Exception as exc:  # Redis trouble or worse: the mark stays, look again
                if not self._failures:
                    log.warning("redis_error", where="cancel_watch", error=describe(exc))
                self._failures += 1
                continue
            self._failures = 0
            for job_id, request in found.items():
                self._stop(job_id, request)

    def _stop(self, job_id: str, request: CancelRequest) -> None:
        run = self._running.get(job_id)
        if run is None or run.cancel_request is not None:
            return  # ended meanwhile, or stopping already
        run.cancel_request = request
        log.info("job_cancelling", job_id=job_id, by=request.by, reason=request.reason)
        entry = self.tasks.get(job_id)
        if entry is not None:
            entry[1].cancel()


async def refuse_cancelled(bull: BullQueue, job: JobRecord) -> None:
    """For a job whose hash carries a cancel request: one taken again (after its worker died,
    or a retry) fails at once (raises JobCancelled), never runs; a request left on a job that
    another tool sent back to run (Node's retry keeps fields it does not know) is dropped."""
    request = requested_on(job)
    if request is not None:
        raise JobCancelled(request.message)
    await bull.drop_stale_cancel(job.id)


def cancelled_error(request: CancelRequest) -> JobCancelled | None:
    """The error a cancelled attempt fails with, once the watch's cancellation of the current
    task is taken back; None when the task is being cancelled for another reason too (the
    worker's shutdown), whose CancelledError must go on: the job goes back to the queue and
    fails when it is taken again."""
    current = asyncio.current_task()
    pending = current.cancelling() if current is not None else 0
    if pending > 1:
        return None
    if pending == 1 and current is not None:
        current.uncancel()
    return JobCancelled(request.message)
