"""Pure values about jobs: their states and where a queue keeps their failure records.

The retry policy, the backoff arithmetic and the option limits are ``conveyor.policy``.
Nothing here touches Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life, in BullMQ's own words."""

    WAITING = "waiting"
    PRIORITIZED = "prioritized"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    WAITING_CHILDREN = "waiting-children"
    UNKNOWN = "unknown"


#: The states counted for a queue, in display order.
COUNTED_STATES: tuple[JobState, ...] = (
    JobState.WAITING,
    JobState.PRIORITIZED,
    JobState.DELAYED,
    JobState.ACTIVE,
    JobState.PAUSED,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.WAITING_CHILDREN,
)


def is_counter_id(job_id: str) -> bool:
    """Whether ``job_id`` is a BullMQ counter id ("1", "2", ...), as BullMQ gives jobs added
    without a custom id (Node.js producers). Conveyor never makes or accepts such ids."""
    return job_id.isascii() and job_id.isdigit()


#: The seed's deployment: queue ``taskQueue`` under BullMQ's default prefix ``bull``. Its
#: permanent failures live at exactly ``failedJobs:{jobId}``, as the seed says.
SEED_PREFIX = "bull"
SEED_QUEUE = "taskQueue"


@dataclass(frozen=True)
class FailureKeys:
    """Where one queue (prefix + name) keeps the records of its permanently failed jobs.

    The one place that maps a job to its record key (worker, client, API, monitor and
    cleanup all ask it):

    - the seed's queue (``taskQueue`` under prefix ``bull``): ``failedJobs:{jobId}`` for every
      id, BullMQ counter ids included, indexed in ``failedJobs-index`` (``failedJobs`` is the
      ``failed_key_prefix`` setting);
    - every other queue: inside its own key space, ``{prefix}:{queue}:conveyor:failed:{jobId}``,
      indexed in ``{prefix}:{queue}:conveyor:failed-index``. Job ids never contain ``:``, so
      no two queues' records can share a key.

    ``legacy_record``/``legacy_index`` name where earlier versions wrote the same record
    (``failedJobs:{jobId}``, or ``failedJobs:{queue}:{jobId}`` for counter ids, all queues in
    ``failedJobs-index``): readers fall back to it when its ``queue`` and ``prefix`` fields
    are this queue's, and cleanup drains it.
    """

    prefix: str
    queue: str
    failed_key_prefix: str = "failedJobs"

    @property
    def is_seed(self) -> bool:
        return self.prefix == SEED_PREFIX and self.queue == SEED_QUEUE

    @property
    def record_base(self) -> str:
        """The record key without the job id."""
        if self.is_seed:
            return f"{self.failed_key_prefix}:"
        return f"{self.prefix}:{self.queue}:conveyor:failed:"

    @property
    def index(self) -> str:
        """A sorted set of this queue's record keys scored by failure time (ms)."""
        if self.is_seed:
            return self.legacy_index
        return f"{self.prefix}:{self.queue}:conveyor:failed-index"

    @property
    def legacy_index(self) -> str:
        return f"{self.failed_key_prefix}-index"

    def record(self, job_id: str) -> str:
        return self.record_base + job_id

    def legacy_record(self, job_id: str) -> str:
        if is_counter_id(job_id):
            return f"{self.failed_key_prefix}:{self.queue}:{job_id}"
        return f"{self.failed_key_prefix}:{job_id}"
