"""``Schedules``: a queue's schedules from Python (the API, the CLI, the monitor and a worker's
start all use it): create or change one (checked against its task like an enqueue), read,
remove, run now, and bring the schedules declared in code in line.

Schedules are BullMQ job schedulers (``conveyor._bullmq.schedulers``), so Node's
``getJobSchedulers`` lists Conveyor's and Conveyor lists Node's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from conveyor._bullmq import BullQueue, SchedulerRecord
from conveyor._bullmq.record import dumps
from conveyor.client import QueueClient
from conveyor.clock import now_ms
from conveyor.errors import ScheduleError, ScheduleNotFoundError
from conveyor.keys import declared_schedules
from conveyor.log import get_logger
from conveyor.registry import TaskRegistry
from conveyor.schedules import Schedule, check_id

log = get_logger("conveyor.schedules")


def same(record: SchedulerRecord, schedule: Schedule, data_json: str) -> bool:
    """Whether the stored scheduler already is ``schedule`` (then it is left as it is, its
    next run too)."""
    return (
        record.name == schedule.task
        and record.every_ms == schedule.every_ms
        and record.pattern == schedule.cron
        and record.tz == schedule.tz
        and record.start_ms == schedule.start_ms
        and record.end_ms == schedule.end_ms
        and record.limit == schedule.limit
        and dumps(record.data) == data_json
    )


@dataclass
class Reconciled:
    """What bringing the declared schedules in line did."""

    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class Schedules:
    """The schedules of one queue. With a ``registry``, a schedule's task and payload are
    checked before anything is written (UnknownTaskError, PayloadValidationError).

    From an application: ``Schedules.of(client)`` for a ``QueueClient``'s queue (and its
    registry, if it has one)."""

    def __init__(self, bull: BullQueue, registry: TaskRegistry | None = None) -> None:
        self.bull = bull
        self.registry = registry
        self._declared = declared_schedules(bull.prefix, bull.name)

    @classmethod
    def of(cls, client: QueueClient) -> Schedules:
        return cls(client.bull, client.registry)

    def _payload(self, schedule: Schedule) -> str:
        data = schedule.data if schedule.data is not None else {}
        if self.registry is not None:
            self.registry.validate(schedule.task, data)
        return dumps(data)

    async def put(self, schedule: Schedule) -> tuple[bool, SchedulerRecord]:
        """Create ``schedule`` or change the one with its id; answers (created, as stored).
        An unchanged schedule is left as it is."""
        data_json = self._payload(schedule)
        current = await self.bull.schedulers.get(schedule.id)
        if current is not None and same(current, schedule, data_json):
            return False, current
        if schedule.end_ms is not None and schedule.end_ms < now_ms():
            raise ScheduleError("end is in the past: the schedule would never run")
        if await self.bull.schedulers.upsert(schedule) is None:
            raise ScheduleError("the schedule would never run (no cron run before its end)")
        stored = await self.bull.schedulers.get(schedule.id)
        if stored is None:  # removed at this very moment by someone else
            raise ScheduleNotFoundError(schedule.id, self.bull.name)
        return current is None, stored

    async def get(self, schedule_id: str) -> SchedulerRecord:
        record = await self.bull.schedulers.get(schedule_id) if schedule_id else None
        if record is None:
            raise ScheduleNotFoundError(schedule_id, self.bull.name)
        return record

    async def all(self) -> list[SchedulerRecord]:
        return await self.bull.schedulers.all()

    async def remove(self, schedule_id: str) -> None:
        """Remove a schedule and its next run's job (unless that already runs)."""
        if not schedule_id or not await self.bull.schedulers.remove(schedule_id):
            raise ScheduleNotFoundError(schedule_id, self.bull.name)
        await self.bull.redis.srem(self._declared, schedule_id)

    async def run_now(self, schedule_id: str) -> str:
        """Add one job now with the schedule's task and data (its slots stay as they are);
        answers the job's id."""
        record = await self.get(schedule_id)
        # Node may name a scheduler with ':', which no plain job id may hold.
        job_id = f"run-{schedule_id.replace(':', '_')}-{uuid.uuid4().hex[:12]}"
        if self.registry is not None:
            self.registry.validate(record.name, record.data)
        return await self.bull.schedulers.run_now(record, job_id)

    async def reconcile(self, declared: list[Schedule]) -> Reconciled:
        """Bring the schedules declared in code in line: each one created or changed as
        needed; a schedule a previous start declared and this code no longer does is removed
        when this code still has its task (two apps on one queue leave each other's alone).
        Schedules made over HTTP or by Node are never touched."""
        for schedule in declared:
            check_id(schedule.id)
            self._payload(schedule)  # all checked before anything is written
        done = Reconciled()
        for schedule in declared:
            await self.bull.redis.sadd(self._declared, schedule.id)
            if schedule.end_ms is not None and schedule.end_ms < now_ms():
                log.warning("schedule_ended", schedule=schedule.id, end_ms=schedule.end_ms)
                continue  # over: nothing to create (a stored one ends by itself)
            before = await self.bull.schedulers.get(schedule.id)
            created, _ = await self.put(schedule)
            if created:
                done.created.append(schedule.id)
            elif before is not None and not same(before, schedule, self._payload(schedule)):
                done.changed.append(schedule.id)
            else:
                done.unchanged.append(schedule.id)
        wanted = {s.id for s in declared}
        previously = await self.bull.redis.smembers(self._declared)
        for schedule_id in sorted(str(s) for s in previously if str(s) not in wanted):
            record = await self.bull.schedulers.get(schedule_id)
            if record is not None and (self.registry is None or record.name not in self.registry):
                continue  # another app's (or its task left the code too): not ours to decide
            await self.bull.schedulers.remove(schedule_id)
            await self.bull.redis.srem(self._declared, schedule_id)
            done.removed.append(schedule_id)
        return done


def describe(record: SchedulerRecord) -> dict[str, Any]:
    """A plain view of a schedule (the CLI prints it; the API and monitor shape their own)."""
    return {
        "id": record.id,
        "task": record.name,
        "every_ms": record.every_ms,
        "cron": record.pattern,
        "tz": record.tz,
        "next_ms": record.next_ms,
        "runs": record.iterations,
        "last_run": record.last_run,
    }
