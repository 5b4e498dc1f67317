"""Turning enqueue requests into BullMQ jobs: validation, idempotency, then Redis.

Everything that can be wrong with a request is found by ``prepare`` (task, payload, options,
idempotency) before a byte is sent; Redis is only asked to add jobs that are known good.

Idempotency: an ``Idempotency-Key`` header becomes the job id ``idem-<sha256 of the key>``
(``-<index>`` appended in a bulk request). BullMQ's add scripts leave an existing id
untouched, so a retried request finds the job the first one created and gets it back (200
instead of 201). The same holds for a client's own ``options.jobId``. A key reused for a
different task or payload is refused (422) and changes nothing. The guarantee lasts as long
as the job exists: once it is removed (removeOnComplete, DELETE, cleanup) the key is free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import Pipeline

from conveyor.client import JobSpec, QueueClient
from conveyor.errors import ConveyorError, JobOptionsError
from conveyor.services.api.batcher import PipelineBatcher
from conveyor.services.api.gate import RedisGate
from conveyor.services.api.models import EnqueueRequest
from conveyor.services.api.problems import (
    IDEMPOTENCY_KEY_REUSED,
    ProblemError,
    from_conveyor_error,
)

IDEMPOTENT_PREFIX = "idem-"


def idempotent_job_id(key: str, index: int | None = None) -> str:
    """The job id an Idempotency-Key stands for (``index``: the job's place in a bulk)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{IDEMPOTENT_PREFIX}{digest}" + ("" if index is None else f"-{index}")


@dataclass(frozen=True)
class PreparedJob:
    """A job that passed every check, ready to be sent."""

    name: str
    job_id: str
    data_json: str
    options: dict[str, Any]
    #: The caller chose the id (Idempotency-Key or jobId): it may exist already.
    client_id: bool
    #: An existing job must have the same task and payload (Idempotency-Key).
    must_match: bool


@dataclass(frozen=True)
class Accepted:
    """A job Redis holds: ``created`` False when it was there already."""

    job_id: str
    name: str
    created: bool


def _same_job(job: PreparedJob, name: str | None, data_json: str | None) -> bool:
    if name != job.name:
        return False
    if data_json == job.data_json:
        return True
    try:
        return bool(json.loads(data_json or "null") == json.loads(job.data_json))
    except ValueError:
        return False


def _check_match(job: PreparedJob, existing: Any) -> bool:
    """Whether the job existed before the add; raises if an Idempotency-Key was reused."""
    if isinstance(existing, Exception):
        raise existing
    name, data_json = existing
    if name is None:
        return False
    if job.must_match and not _same_job(job, name, data_json):
        raise ProblemError(
            IDEMPOTENCY_KEY_REUSED,
            f"this Idempotency-Key already made job {job.job_id} with another task or payload; "
            "use a new key for a new job",
            extra={"job_id": job.job_id},
        )
    return True


class Enqueuer:
    """Validates and adds jobs for the API, batching single adds per event-loop tick."""

    def __init__(
        self, client: QueueClient, batcher: PipelineBatcher | None, gate: RedisGate
    ) -> None:
        self.client = client
        self.batcher = batcher
        self.gate = gate

    def prepare(
        self, request: EnqueueRequest, idempotency_key: str | None, index: int | None = None
    ) -> PreparedJob:
        """Check one job completely; ProblemError (422) tells what is wrong and where."""
        prefix = "" if index is None else f"jobs.{index}."
        options = request.options.to_bullmq() if request.options else {}
        given_id = "jobId" in options
        if idempotency_key is not None:
            if given_id:
                raise from_conveyor_error(
                    JobOptionsError(
                        "options.jobId and the Idempotency-Key header both name the job; "
                        "send one of them"
                    ),
                    prefix,
                )
            options["jobId"] = idempotent_job_id(idempotency_key, index)
        try:
            job_id, data_json, opts = self.client.prepare(
                JobSpec(request.name, request.data, options)
            )
        except ConveyorError as exc:
            raise from_conveyor_error(exc, prefix) from exc
        return PreparedJob(
            name=request.name,
            job_id=job_id,
            data_json=data_json,
            options=opts,
            client_id=given_id or idempotency_key is not None,
            must_match=idempotency_key is not None,
        )

    async def _queue(self, job: PreparedJob, pipe: Pipeline) -> int:
        count = 1
        if job.client_id:
            pipe.hmget(self.client.bull.job_key(job.job_id), "name", "data")
            count = 2
        await self.client.bull.add_job(job.job_id, job.name, job.data_json, job.options, pipe=pipe)
        return count

    async def add(self, job: PreparedJob) -> Accepted:
        """Add one job; answers once Redis has it (or raises: RedisError, TimeoutError)."""
        if self.batcher is not None:  # answers within the gate's time bound by itself
            results = await self.batcher.run(lambda pipe: self._queue(job, pipe))
        else:
            async with self.gate.open():
                results = await self._add_alone(job)
        existed = _check_match(job, results[0]) if job.client_id else False
        stored = results[-1]
        if isinstance(stored, Exception):
            raise stored
        return Accepted(job_id=str(stored), name=job.name, created=not existed)

    async def _add_alone(self, job: PreparedJob) -> list[Any]:
        if not job.client_id:
            return [
                await self.client.bull.add_job(job.job_id, job.name, job.data_json, job.options)
            ]
        async with self.client.redis.pipeline(transaction=False) as pipe:
            await self._queue(job, pipe)
            return list(await pipe.execute(raise_on_error=False))

    async def add_bulk(self, jobs: Sequence[PreparedJob]) -> list[Accepted]:
        """Add every job in one MULTI (all or nothing), after checking reused ids."""
        ids = [job.job_id for job in jobs]
        if len(set(ids)) != len(ids):
            raise from_conveyor_error(
                JobOptionsError("the same jobId appears twice in one bulk request")
            )
        async with self.gate.open():
            existed = await self._existing(jobs)
            async with self.client.redis.pipeline(transaction=True) as pipe:
                for job in jobs:
                    await self.client.bull.add_job(
                        job.job_id, job.name, job.data_json, job.options, pipe=pipe
                    )
                stored = await pipe.execute()
        return [
            Accepted(job_id=str(s), name=job.name, created=not e)
            for job, s, e in zip(jobs, stored, existed, strict=True)
        ]

    async def _existing(self, jobs: Sequence[PreparedJob]) -> list[bool]:
        chosen = [job for job in jobs if job.client_id]
        if not chosen:
            return [False] * len(jobs)
        async with self.client.redis.pipeline(transaction=False) as pipe:
            for job in chosen:
                pipe.hmget(self.client.bull.job_key(job.job_id), "name", "data")
            found = await pipe.execute()
        seen = {job.job_id: _check_match(job, row) for job, row in zip(chosen, found, strict=True)}
        return [seen.get(job.job_id, False) for job in jobs]
