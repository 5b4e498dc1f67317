"""The BullMQ adapter: the only package that speaks BullMQ's key layout, Lua scripts and
camelCase job hashes.

- ``scripts``: the Lua scripts that ship inside the ``bullmq`` package (the same scripts
  Node.js BullMQ runs), with Conveyor's paused-layout guard, and their error codes;
- ``layout``: BullMQ's keys of a queue, and which ids can name a job;
- ``record``: a job hash decoded into ``JobRecord`` (the public read model);
- ``schedulers``: BullMQ's job schedulers (``BullQueue.schedulers``);
- ``queue``: ``BullQueue``, the script calls of one queue (each takes an optional pipeline
  so callers can batch): adding and the worker's cycle there, reading in ``reads``, managing
  in ``admin``, a dead worker's jobs and the heartbeats in ``recovery``, what they share in
  ``base``.

Conveyor's own keys are ``conveyor.keys``; its own Lua is ``conveyor.lua``.
"""

from conveyor._bullmq.admin import CleanedBatch
from conveyor._bullmq.base import Fetched, fetched
from conveyor._bullmq.layout import RESERVED_JOB_IDS, is_job_id
from conveyor._bullmq.limits import FlowState
from conveyor._bullmq.queue import BullQueue
from conveyor._bullmq.record import DUE_FIELD, FailureSummary, JobRecord, dumps, event_job_id
from conveyor._bullmq.recovery import Beat
from conveyor._bullmq.schedulers import QueueSchedulers, SchedulerRecord, slot_job_id
from conveyor._bullmq.scripts import script_error

__all__ = [
    "DUE_FIELD",
    "RESERVED_JOB_IDS",
    "Beat",
    "BullQueue",
    "CleanedBatch",
    "FailureSummary",
    "Fetched",
    "FlowState",
    "JobRecord",
    "QueueSchedulers",
    "SchedulerRecord",
    "dumps",
    "event_job_id",
    "fetched",
    "is_job_id",
    "script_error",
    "slot_job_id",
]
