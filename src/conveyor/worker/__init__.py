"""The worker: runs jobs with locks, retries and backoff.

``runner``: the loop (fetch, dispatch, lock renewal, stalled check, shutdown); ``group`` and
``slots``: several queues in one process, sharing its concurrency by weight; ``attempt``: one
attempt of one job and its outcome; ``stack``: what a handler raised, as text for Redis.
"""

from conveyor.worker.group import WorkerGroup
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runner import Worker

__all__ = ["Worker", "WorkerGroup", "WorkerOptions"]
