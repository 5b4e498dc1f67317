"""Every Redis key Conveyor owns (beside BullMQ's own, which ``conveyor._bullmq`` names), in
one layout: a queue's keys live inside its own key space, ``{prefix}:{queue}:conveyor:``, so
they share the queue's hash slot and go when the queue goes. Pure names, no I/O.

=====================================================  ========================================
``{prefix}:{queue}:conveyor:failed:{jobId}``           failure record (every queue but the
                                                       seed's), ``FailureKeys``
``{prefix}:{queue}:conveyor:failed-index``             its index by failure time (ms)
``failedJobs:{jobId}``, ``failedJobs-index``           the seed's queue (``taskQueue`` under
                                                       ``bull``): exactly where the seed's
                                                       deployment reads them; kept as they are
``{prefix}:{queue}:conveyor:ts:{minute}``, ``…:totals``  throughput history (observability.stats)
``{prefix}:{queue}:conveyor:bulk:{uuid}``              a bulk enqueue's commit receipt (API)
``{prefix}:{queue}:conveyor:cleanup:{lease,last-run,runs}``  cleanup schedule, ``CleanupKeys``
``{prefix}:{queue}:conveyor:cancel:{jobId}``           a running job's cancel mark (a ttl),
                                                       ``cancel_mark``
``{prefix}:{queue}:conveyor:schedules:last-run``       each schedule's last run taken (a hash)
``{prefix}:{queue}:conveyor:schedules:declared``       ids of the schedules declared in code
``{prefix}:{queue}:conveyor:heartbeats``, ``…:judge``    workers' heartbeats (worker.heartbeat)
``{prefix}:{queue}:conveyor:task-rate:{task}``         a task's rate window counter, and
``{prefix}:{queue}:conveyor:task-running:{task}``      its running jobs: ``task_limit_keys``
=====================================================  ========================================

Earlier versions kept the cleanup schedule at ``conveyor:cleanup:{prefix}:{queue}:*`` and
failure records of other queues at ``failedJobs:*``; ``CleanupKeys.legacy_*`` and
``FailureKeys.legacy_*`` name those, which readers still honour (docs/cleanup.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from conveyor.hashtag import queue_hash_tag

#: Conveyor's own keys under a queue's prefix all start ``{prefix}:{queue}:conveyor:``; no job
#: may have this id (its hash would be the key space's root).
CONVEYOR_KEY_SPACE = "conveyor"


#: Within a queue's key space: its failure records (``…:conveyor:failed:{jobId}``) and their
#: index (``…:conveyor:failed-index``).
FAILED_RECORD = "failed:"
FAILED_INDEX = "failed-index"
#: What follows ``{prefix}:{queue}`` in those keys, for the record script, which moves a record
#: of another queue home (``lua/failure_record.lua``, ARGV 11 and 12).
OTHER_QUEUE_RECORD_SUFFIXES = (
    f":{CONVEYOR_KEY_SPACE}:{FAILED_RECORD}",
    f":{CONVEYOR_KEY_SPACE}:{FAILED_INDEX}",
)


def queue_space(prefix: str, queue: str) -> str:
    """The start of every key Conveyor owns for one queue: ``{prefix}:{queue}:conveyor:``."""
    return f"{prefix}:{queue}:{CONVEYOR_KEY_SPACE}:"


def bulk_receipt(prefix: str, queue: str, token: str) -> str:
    """The key a bulk enqueue writes in its MULTI, proving it committed."""
    return f"{queue_space(prefix, queue)}bulk:{token}"


def heartbeats(prefix: str, queue: str) -> str:
    """The workers of a queue and their last heartbeat (a sorted set: name -> Redis time, ms)."""
    return f"{queue_space(prefix, queue)}heartbeats"


def heartbeat_judge(prefix: str, queue: str) -> str:
    """The short lease of the one worker that looks for silent peers this interval."""
    return f"{queue_space(prefix, queue)}heartbeats:judge"


def stats_minute(prefix: str, queue: str, minute: int) -> str:
    """One minute of a queue's throughput history (a hash)."""
    return f"{queue_space(prefix, queue)}ts:{minute}"


def stats_totals(prefix: str, queue: str) -> str:
    """A queue's running totals (a hash)."""
    return f"{queue_space(prefix, queue)}totals"


def cancel_mark(prefix: str, queue: str, job_id: str) -> str:
    """The durable request to stop a running job (``conveyor._bullmq.cancel``): set by a
    cancel, read by the worker that runs the job, deleted when it has failed the job."""
    return f"{queue_space(prefix, queue)}cancel:{job_id}"


def schedule_last_runs(prefix: str, queue: str) -> str:
    """A hash: schedule id -> its last run a worker took (JSON: slot, job id, taken at)."""
    return f"{queue_space(prefix, queue)}schedules:last-run"


def declared_schedules(prefix: str, queue: str) -> str:
    """A set: the ids of the schedules that workers brought in line with code declarations
    (the only ones a worker start may remove)."""
    return f"{queue_space(prefix, queue)}schedules:declared"


def task_limit_keys(prefix: str, queue: str, task: str) -> tuple[str, str]:
    """A limited task's rate-window counter and running set (``lua/task_slot.lua``)."""
    space = queue_space(prefix, queue)
    return f"{space}task-rate:{task}", f"{space}task-running:{task}"


@dataclass(frozen=True)
class CleanupKeys:
    """Where one queue's cleanup schedule and history live (``maintenance.schedule``):
    ``{prefix}:{queue}:conveyor:cleanup:{lease,last-run,runs}``.

    ``legacy_*`` are the keys of versions before this layout
    (``conveyor:cleanup:{prefix}:{queue}:*``). The schedule reads the later of both last-run
    times, keeps a legacy last-run that exists in step, takes both leases and shows both
    histories, so a deployment that upgrades (even replica by replica) neither skips nor
    repeats a run.
    """

    lease: str
    last_run: str
    runs: str
    legacy_lease: str
    legacy_last_run: str
    legacy_runs: str

    @classmethod
    def for_queue(cls, prefix: str, queue: str) -> CleanupKeys:
        base = f"{queue_space(prefix, queue)}cleanup"
        legacy = f"conveyor:cleanup:{prefix}:{queue}"
        return cls(
            lease=f"{base}:lease",
            last_run=f"{base}:last-run",
            runs=f"{base}:runs",
            legacy_lease=f"{legacy}:lease",
            legacy_last_run=f"{legacy}:last-run",
            legacy_runs=f"{legacy}:runs",
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

    The names that do not depend on a job are worked out once (a worker asks for them on
    every failure).

    ``legacy_record``/``legacy_index`` name where earlier versions wrote the same record
    (``failedJobs:{jobId}``, or ``failedJobs:{queue}:{jobId}`` for counter ids, all queues in
    ``failedJobs-index``): readers fall back to it when its ``queue`` and ``prefix`` fields
    are this queue's, and cleanup drains it.
    """

    prefix: str
    queue: str
    failed_key_prefix: str = "failedJobs"

    @cached_property
    def is_seed(self) -> bool:
        return self.prefix == SEED_PREFIX and self.queue == SEED_QUEUE

    @cached_property
    def record_base(self) -> str:
        """The record key without the job id."""
        if self.is_seed:
            return f"{self.failed_key_prefix}:"
        return f"{queue_space(self.prefix, self.queue)}{FAILED_RECORD}"

    @cached_property
    def index(self) -> str:
        """A sorted set of this queue's record keys scored by failure time (ms)."""
        if self.is_seed:
            return self.legacy_index
        return f"{queue_space(self.prefix, self.queue)}{FAILED_INDEX}"

    @cached_property
    def hash_tagged(self) -> bool:
        """Whether the queue's keys carry a Redis Cluster hash tag (``conveyor.hashtag``). Such
        a queue has no legacy keys: they are its own ones, since the shared ``failedJobs:*``
        keys of earlier versions would hash to other slots than the queue (a script touching
        both fails in a cluster). Earlier versions never ran in a cluster."""
        return queue_hash_tag(self.prefix, self.queue) is not None

    @cached_property
    def legacy_index(self) -> str:
        if self.hash_tagged:
            return self.index
        return f"{self.failed_key_prefix}-index"

    def record(self, job_id: str) -> str:
        return self.record_base + job_id

    def legacy_record(self, job_id: str) -> str:
        if self.hash_tagged:
            return self.record(job_id)
        if is_counter_id(job_id):
            return f"{self.failed_key_prefix}:{self.queue}:{job_id}"
        return f"{self.failed_key_prefix}:{job_id}"
