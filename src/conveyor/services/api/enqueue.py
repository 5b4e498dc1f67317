"""Turning enqueue requests into BullMQ jobs: validation, idempotency, then Redis.

Everything that can be wrong with a request is found by ``prepare`` (task, payload, options,
idempotency) before a byte is sent; Redis is only asked to add jobs that are known good.

Idempotency: an ``Idempotency-Key`` header stands for its whole request (``idempotency.py``):
its jobs get ids derived from the key and carry the request's fingerprint, and a request under
a key is checked against them under WATCH before anything is added. A retried request finds
the jobs the first one created and gets them back (200 instead of 201); a different request
under the same key (task, payload, options, batch size or endpoint) is refused (422) and
changes nothing. The guarantee lasts as long as the jobs exist: once they are removed
(removeOnComplete, DELETE, cleanup) the key is free. A client's own ``options.jobId`` follows
BullMQ's duplicate rule instead: an existing job is returned as it is.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, WatchError

from conveyor import keys, lua
from conveyor.client import JobSpec, QueueClient
from conveyor.errors import ConveyorError, JobOptionsError
from conveyor.log import get_logger
from conveyor.resp import Command, pack_evalsha
from conveyor.services.api.batcher import PipelineBatcher
from conveyor.services.api.connections import ConnectionIds, LeanConnections
from conveyor.services.api.gate import RedisGate
from conveyor.services.api.idempotency import (
    FINGERPRINT_FIELD,
    Endpoint,
    fingerprint,
    idempotent_job_id,
    job_digest,
    probe_ids,
)
from conveyor.services.api.models import EnqueueRequest
from conveyor.services.api.problems import (
    IDEMPOTENCY_KEY_REUSED,
    ProblemError,
    from_conveyor_error,
)

log = get_logger("conveyor.api")

#: Probe-and-add rounds an idempotent request makes when other writers keep changing its jobs.
WATCH_ROUNDS = 5
#: How long a bulk's commit receipt lives (s): it only has to outlast the answer.
RECEIPT_TTL_S = 300
#: How often a cut-off bulk looks whether Redis has let go of its connection (s).
CONNECTION_GONE_POLL_S = 0.005

__all__ = ["Accepted", "Enqueuer", "PreparedJob", "idempotent_job_id"]


@dataclass(frozen=True)
class PreparedJob:
    """A job that passed every check, ready to be sent."""

    name: str
    job_id: str
    data_json: str
    options: dict[str, Any]
    #: The caller chose the id (Idempotency-Key or jobId): it may exist already.
    client_id: bool
    #: The Idempotency-Key the job was made under, if any.
    key: str | None = None
    #: This job's part of its request's fingerprint (with a key).
    digest: bytes = b""


@dataclass(frozen=True)
class Accepted:
    """A job Redis holds: ``created`` False when it was there already."""

    job_id: str
    name: str
    created: bool
    #: The job's ``deduplication`` matched a job already there: ``job_id`` is that one's.
    deduplicated: bool = False


def _stored(job: PreparedJob, stored: Any, existed: bool) -> Accepted:
    """What the add script answered for ``job``: its id, or the id of the job its
    deduplication matched (BullMQ adds nothing then)."""
    if isinstance(stored, Exception):
        raise stored
    stored_id = str(stored)
    deduplicated = stored_id != job.job_id
    return Accepted(stored_id, job.name, not existed and not deduplicated, deduplicated)


def _same_job(job: PreparedJob, name: str | None, data_json: str | None) -> bool:
    if name != job.name:
        return False
    if data_json == job.data_json:
        return True
    try:
        return bool(json.loads(data_json or "null") == json.loads(job.data_json))
    except ValueError:
        return False


def _existed(existing: Any) -> bool:
    """Whether a client-chosen id (``options.jobId``) named a job before the add."""
    if isinstance(existing, Exception):
        raise existing
    return bool(existing)


def _judge(jobs: Sequence[PreparedJob], probes: list[str], found: list[Any], fp: str) -> list[bool]:
    """Which of the request's jobs exist already; raises 422 when a probed job was made by
    another request under the same key."""
    existed: list[bool] = []
    for index, (probe, row) in enumerate(zip(probes, found, strict=True)):
        own = jobs[index] if index < len(jobs) else None
        if row:
            if isinstance(row, str):
                same = row == fp
            else:  # a job without a fingerprint: made before them, compared the old way
                same = own is not None and _same_job(own, row[0], row[1])
            if not same:
                raise ProblemError(
                    IDEMPOTENCY_KEY_REUSED,
                    f"this Idempotency-Key already made job {probe} for another request "
                    "(another task, payload, options, batch or endpoint); use a new key for "
                    "a new request",
                    extra={"job_id": probe},
                )
        if own is not None:
            existed.append(bool(row))
    return existed


@dataclass
class _Sending:
    """What a bulk knows before its MULTI goes out: which jobs existed already, and the Redis
    client id of the connection that sends it (to tell, if the answer is cut off, when Redis
    has read everything that connection sent)."""

    existed: list[bool] = field(default_factory=list)
    connection: int | None = None


class Enqueuer:
    """Validates and adds jobs for the API, batching single adds per event-loop tick."""

    def __init__(
        self,
        client: QueueClient,
        batcher: PipelineBatcher | None,
        gate: RedisGate,
        *,
        bulk_s_per_job: float = 0.0,
    ) -> None:
        self.client = client
        self.batcher = batcher
        self.gate = gate
        #: Extra Redis time a bulk gets per job, beyond the gate's bound.
        self.bulk_s_per_job = bulk_s_per_job
        #: CONVEYOR_ENQUEUE_REPLICAS (None: answer once the master has the jobs).
        self.ack = client.replica_ack
        self._probe = client.redis.register_script(lua.source("idempotency_probe"))
        #: The client id of each pooled connection, for a keyed bulk's commit proof.
        self.connection_ids = ConnectionIds()
        #: Lean connections for the MULTI of a bulk without a key.
        self.lean = LeanConnections(client.redis)

    def prepare(
        self, request: EnqueueRequest, idempotency_key: str | None, index: int | None = None
    ) -> PreparedJob:
        """Check one job completely; ProblemError (422) tells what is wrong and where."""
        prefix = "" if index is None else f"jobs.{index}."
        sent = request.options.to_bullmq() if request.options else {}
        options = dict(sent)
        given_id = "jobId" in options
        if idempotency_key is not None:
            if "deduplication" in options:
                raise from_conveyor_error(
                    JobOptionsError(
                        "options.deduplication and the Idempotency-Key header both decide "
                        "whether the job is new; send one of them"
                    ),
                    prefix,
                )
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
            key=idempotency_key,
            digest=b"" if idempotency_key is None else job_digest(request.name, data_json, sent),
        )

    async def _queue(self, job: PreparedJob, pipe: Pipeline) -> int:
        count = 1
        if job.client_id:
            pipe.hexists(self.client.bull.job_key(job.job_id), "name")
            count = 2
        await self.client.bull.add_job(job.job_id, job.name, job.data_json, job.options, pipe=pipe)
        return count

    def _commands(self, job: PreparedJob) -> tuple[list[Command], list[AsyncScript]]:
        """``_queue``'s commands as the batcher sends them: HEXISTS for an id the caller
        chose, then the add script by EVALSHA."""
        bull = self.client.bull
        script, keys, args = bull.add_job_call(job.job_id, job.name, job.data_json, job.options)
        add = pack_evalsha(script.sha, keys, args)
        if job.client_id:
            return [("HEXISTS", bull.job_key(job.job_id), "name"), add], [script]
        return [add], [script]

    async def add(self, job: PreparedJob) -> Accepted:
        """Add one job; answers once Redis has it (or raises: RedisError, TimeoutError)."""
        if job.key is not None:
            sending = _Sending()
            receipt = self._receipt() if self.ack else None
            async with self.gate.open():
                await self._add_once([job], "enqueue", job.key, sending, receipt)
                await self._acknowledge([job], sending, receipt)
            return Accepted(job_id=job.job_id, name=job.name, created=not sending.existed[0])
        if self.batcher is not None:  # answers within the gate's time bound by itself
            results = await self.batcher.run(*self._commands(job))
        else:
            async with self.gate.open():
                results = await self._add_alone(job)
        existed = _existed(results[0]) if job.client_id else False
        return _stored(job, results[-1], existed)

    async def _add_alone(self, job: PreparedJob) -> list[Any]:
        if not job.client_id and self.ack is None:
            return [
                await self.client.bull.add_job(job.job_id, job.name, job.data_json, job.options)
            ]
        async with self.client.redis.pipeline(transaction=False) as pipe:
            await self._queue(job, pipe)
            if self.ack is not None:
                pipe.execute_command(*self.ack.command())
            results = list(await pipe.execute(raise_on_error=False))
        if self.ack is not None:
            self.ack.check(results.pop())
        return results

    def _receipt(self) -> str:
        bull = self.client.bull
        return keys.bulk_receipt(bull.prefix, bull.name, uuid.uuid4().hex)

    async def _acknowledge(
        self, jobs: Sequence[PreparedJob], sending: _Sending, receipt: str | None
    ) -> None:
        """With CONVEYOR_ENQUEUE_REPLICAS: return once the replicas hold the jobs, else
        ReplicationError (503). A request whose jobs all existed wrote no receipt."""
        if self.ack is None or receipt is None:
            return
        redis = self.client.redis
        if all(sending.existed):
            job_keys = [self.client.bull.job_key(job.job_id) for job in jobs]
            await self.ack.confirm_existing(redis, job_keys, receipt)
        else:
            await self.ack.confirm(redis, receipt)

    async def add_bulk(self, jobs: Sequence[PreparedJob]) -> list[Accepted]:
        """Add every job in one MULTI (all or nothing), after checking reused ids.

        The Redis bound grows with the batch (``bulk_s_per_job``), and the MULTI writes a
        receipt: if the answer is cut off anyway (bound, connection), a commit the receipt
        proves is answered as the success it is, never 503 for jobs Redis holds.
        """
        ids = [job.job_id for job in jobs]
        if len(set(ids)) != len(ids):
            raise from_conveyor_error(
                JobOptionsError("the same jobId appears twice in one bulk request")
            )
        key = jobs[0].key if jobs else None
        bull = self.client.bull
        receipt = keys.bulk_receipt(bull.prefix, bull.name, uuid.uuid4().hex)
        sending = _Sending()
        stored: list[Any] = [job.job_id for job in jobs]
        try:
            async with self.gate.open(self.gate.timeout_s + len(jobs) * self.bulk_s_per_job):
                if key is not None:
                    await self._add_once(jobs, "bulk", key, sending, receipt)
                else:
                    existed = await self._existing(jobs)
                    async with self.lean.take() as conn:
                        sending.connection = conn.client_id
                        sending.existed = existed
                        added = await self.client.bull.add_jobs_atomically(
                            conn,
                            [(job.job_id, job.name, job.data_json, job.options) for job in jobs],
                            [("SET", receipt, 1, "EX", RECEIPT_TTL_S)],
                        )
                        stored = added[: len(jobs)]
        except (TimeoutError, RedisError, OSError) as exc:
            if not sending.existed or not await self._committed(receipt, sending.connection):
                raise
            log.warning(
                "api_bulk_committed_late", jobs=len(jobs), error=f"{type(exc).__name__}: {exc}"
            )
            stored = await self._kept(jobs, stored)
        if self.ack is not None and jobs:
            async with self.gate.open():
                await self._acknowledge(jobs, sending, receipt)
        return [_stored(job, s, e) for job, s, e in zip(jobs, stored, sending.existed, strict=True)]

    async def _kept(self, jobs: Sequence[PreparedJob], stored: list[Any]) -> list[Any]:
        """For a bulk whose commit is proven but whose replies were cut off: what its add
        scripts answered. A job whose deduplication id was taken was not added; it is
        answered with the job its deduplication key names, as the script would have. If
        Redis cannot tell in time either, the jobs' own ids stand (as they did before)."""
        deduplicated = [i for i, job in enumerate(jobs) if "deduplication" in job.options]
        if not deduplicated:
            return stored
        bull, redis = self.client.bull, self.client.redis
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        try:
            bound = max(self.gate.timeout_s, socket_timeout or 0.0)
            async with self.gate.open(bound), redis.pipeline(transaction=False) as pipe:
                for i in deduplicated:
                    job = jobs[i]
                    pipe.exists(bull.job_key(job.job_id))
                    pipe.get(f"{bull.base}de:{job.options['deduplication']['id']}")
                rows = await pipe.execute()
        except (TimeoutError, RedisError, OSError):
            return stored
        kept = list(stored)
        for n, i in enumerate(deduplicated):
            added, holder = rows[2 * n], rows[2 * n + 1]
            if not added and holder:
                kept[i] = holder
        return kept

    async def close(self) -> None:
        """Close the bulk's lean connections (the pool's are the client's to close)."""
        await self.lean.close()

    async def _committed(self, receipt: str, connection: int | None) -> bool:
        """Whether the MULTI that writes ``receipt`` ran. Redis runs what a connection sent
        before it notices the connection closed, so once ``connection`` is gone from CLIENT
        LIST the receipt tells for sure. False when Redis cannot tell us in time: within
        the Redis client's own socket timeout (CONVEYOR_REDIS_TIMEOUT_S), not the request's
        bound, which has run out already and may have run out while Redis was running that
        very MULTI (a big bulk sent quickly): only once Redis has finished it can it answer."""
        redis = self.client.redis
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        try:
            async with self.gate.open(max(self.gate.timeout_s, socket_timeout or 0.0)):
                if await redis.exists(receipt):
                    return True
                while connection is not None:  # Redis state: no event to wait on
                    if not await redis.client_list(client_id=[connection]):
                        break
                    await asyncio.sleep(CONNECTION_GONE_POLL_S)
                return bool(await redis.exists(receipt))
        except (TimeoutError, RedisError, OSError):
            return False

    async def _add_once(
        self,
        jobs: Sequence[PreparedJob],
        endpoint: Endpoint,
        key: str,
        sending: _Sending,
        receipt: str | None = None,
    ) -> None:
        """Add the jobs of one request under an Idempotency-Key, unless the key already made
        them; fills ``sending`` (which existed, the connection) before the adds are sent.
        Probe and adds are one optimistic transaction (WATCH): if another writer touched a
        probed job in between, it probes again. ``receipt``: a key the MULTI sets, to prove
        the commit."""
        bull = self.client.bull
        probes = probe_ids(key, endpoint, len(jobs))
        keys = [bull.job_key(job_id) for job_id in probes]
        fp = fingerprint(endpoint, [job.digest for job in jobs])
        for _ in range(WATCH_ROUNDS):
            async with self.client.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(*keys)
                found = await self._probe(keys=keys, client=pipe)
                existed = _judge(jobs, probes, list(found), fp)
                if all(existed):
                    sending.existed = existed
                    return
                if receipt is not None:
                    watched = cast(AbstractConnection, pipe.connection)  # WATCH holds it
                    sending.connection = await self.connection_ids.id_of(watched)
                pipe.multi()  # type: ignore[no-untyped-call]
                for job in jobs:
                    await bull.add_job(job.job_id, job.name, job.data_json, job.options, pipe=pipe)
                    pipe.hset(bull.job_key(job.job_id), FINGERPRINT_FIELD, fp)
                if receipt is not None:
                    pipe.set(receipt, 1, ex=RECEIPT_TTL_S)
                sending.existed = existed
                try:
                    await pipe.execute()
                except WatchError:
                    sending.existed = []
                    continue
                return
        raise TimeoutError("the Idempotency-Key's jobs kept changing while they were added")

    async def _existing(self, jobs: Sequence[PreparedJob]) -> list[bool]:
        chosen = [job for job in jobs if job.client_id]
        if not chosen:
            return [False] * len(jobs)
        async with self.client.redis.pipeline(transaction=False) as pipe:
            for job in chosen:
                pipe.hexists(self.client.bull.job_key(job.job_id), "name")
            found = await pipe.execute()
        seen = {job.job_id: _existed(row) for job, row in zip(chosen, found, strict=True)}
        return [seen.get(job.job_id, False) for job in jobs]
