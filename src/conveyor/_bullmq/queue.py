"""``BullQueue``: the script calls of one BullMQ queue (prefix + name) on one Redis client.

Every job Conveyor writes goes through BullMQ's own scripts (``scripts``), so it is a BullMQ
job; what they return comes back decoded (``record``). Adding jobs and the worker's cycle are
here; reading is ``reads``, managing ``admin``, a dead worker's jobs ``recovery``, what
they share ``base``. Each call takes an
optional pipeline so callers can batch.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from conveyor._bullmq.admin import QueueAdmin
from conveyor._bullmq.base import Fetched, fetched, flat, pack
from conveyor._bullmq.cancel import QueueCancel
from conveyor._bullmq.limits import QueueLimitCalls
from conveyor._bullmq.reads import QueueReads
from conveyor._bullmq.record import DUE_FIELD, JobRecord, dumps, dumps_texts
from conveyor._bullmq.recovery import QueueRecovery
from conveyor._bullmq.schedulers import QueueSchedulers
from conveyor._bullmq.scripts import MOVE_TO_FAILED, script_error
from conveyor.clock import now_ms
from conveyor.errors import ConveyorError
from conveyor.failures import FailureStore
from conveyor.keys import OTHER_QUEUE_RECORD_SUFFIXES
from conveyor.resp import Command, RespConnection, ScriptKeys, ignore_reply, pack_evalsha


class BullQueue(QueueReads, QueueAdmin, QueueCancel, QueueLimitCalls, QueueRecovery):
    """One BullMQ queue (prefix + name) on one Redis client: keys plus script calls."""

    @cached_property
    def schedulers(self) -> QueueSchedulers:
        """The queue's job schedulers (``schedulers``)."""
        return QueueSchedulers(self)

    # --- adding ------------------------------------------------------------------------------
    async def add_job(
        self,
        job_id: str,
        name: str,
        data_json: str,
        options: dict[str, Any],
        *,
        timestamp: int | None = None,
        pipe: Pipeline | None = None,
        repeat_job_key: str | None = None,
    ) -> Any:
        """Add one job (standard, delayed or prioritized, as BullMQ's Queue.add does);
        ``repeat_job_key`` is BullMQ's ``rjk`` (a legacy repeatable job's next run).

        Answers the job id, or queues the call on ``pipe``. An existing id is left as it is
        (BullMQ's duplicate rule). With BullMQ's ``deduplication`` option (stored as ``de``,
        its key ``{prefix}:{queue}:de:{id}``, as Node's Queue.add writes them) a duplicate
        answers the id of the job that was there first, and nothing is added.
        """
        script, keys, args = self.add_job_call(
            job_id, name, data_json, options, timestamp, repeat_job_key
        )
        if pipe is None and self._auto is not None:
            return await self._auto.call(script, keys, args, eager=True)
        return await script(keys=keys, args=args, client=pipe)

    def add_job_call(
        self,
        job_id: str,
        name: str,
        data_json: str,
        options: dict[str, Any],
        timestamp: int | None = None,
        repeat_job_key: str | None = None,
    ) -> tuple[AsyncScript, list[Any], list[Any]]:
        """``add_job``'s script call: (script, keys, args)."""
        ts = timestamp if timestamp is not None else now_ms()
        dedup_key = None
        if "deduplication" in options:
            options = dict(options)
            options["de"] = options.pop("deduplication")
            dedup_key = f"{self.base}de:{options['de']['id']}"
        packed_args = pack(
            [self.base, job_id, name, ts, None, None, None, repeat_job_key, dedup_key]
        )
        args: list[Any] = [packed_args, data_json, pack(options), ts]
        if options.get("delay"):
            keys = self._keys("marker", "meta", "id", "delayed", "completed", "events")
            return self._scripts["addDelayedJob"], keys, args
        if options.get("priority"):
            keys = self._keys(
                "marker",
                "meta",
                "id",
                "prioritized",
                "delayed",
                "completed",
                "active",
                "events",
                "pc",
            )
            return self._scripts["addPrioritizedJob"], keys, args
        return self._scripts["addStandardJob"], self._add_standard_keys, args

    @cached_property
    def _add_standard_keys(self) -> ScriptKeys:
        """addStandardJob's keys, packed once with its sha (every add packs only its args)."""
        return ScriptKeys(
            self._scripts["addStandardJob"].sha,
            self._keys(
                "wait", "paused", "meta", "id", "completed", "delayed", "active", "events", "marker"
            ),
        )

    async def add_jobs_atomically(
        self,
        connection: RespConnection | None,
        jobs: Sequence[tuple[str, str, str, dict[str, Any]]],
        tail: Sequence[tuple[Any, ...]] = (),
    ) -> list[Any]:
        """Add ``jobs`` ((job id, name, data JSON, options) each) all or nothing, in one MULTI
        written in one piece on a lean connection (``connection``, else the hot path's):
        hiredis packs and parses it in C, where a redis-py pipeline spends most of a bulk's
        time packing arguments and reading replies in Python. The scripts are loaded in the
        same write just before the MULTI, so no call in it can meet NOSCRIPT (Redis runs the
        rest of a MULTI after one). ``tail``: commands to run inside the MULTI after the adds.
        Answers EXEC's replies (jobs' first); raises the first error, as a pipeline would.
        """
        ts = now_ms()
        calls = [self.add_job_call(*job, ts) for job in jobs]
        scripts = {script.sha: script for script, _, _ in calls}
        commands: list[Command] = [("SCRIPT", "LOAD", s.script) for s in scripts.values()]
        commands.append(("MULTI",))
        commands += [pack_evalsha(script.sha, keys, args) for script, keys, args in calls]
        commands += tail
        commands.append(("EXEC",))
        if connection is not None:
            replies = await connection.execute_many(commands)
        elif self._auto is not None:
            replies = await self._auto.commands(commands)
        else:
            raise ValueError("add_jobs_atomically needs a connection (this client has no hot path)")
        for reply in replies[:-1]:
            if isinstance(reply, Exception):
                raise reply  # a load or a command refused: EXEC discarded the transaction
        result = replies[-1]
        if isinstance(result, Exception):
            raise result
        for reply in result:
            if isinstance(reply, Exception):
                raise reply
        return list(result)

    # --- the worker's cycle ------------------------------------------------------------------
    async def move_to_active(self, token: str, lock_duration_ms: int) -> Fetched:
        keys = [*self._fetch_keys, self.keys["marker"]]
        opts = pack(
            {
                "token": token,
                "lockDuration": lock_duration_ms,
                "limiter": self.limiter,
                **self._processed_by(),
            }
        )
        raw = await self._run("moveToActive", keys, [self.base, now_ms(), opts], None)
        return fetched(raw)

    def _processed_by(self) -> dict[str, str]:
        return {"name": self.worker_name} if self.worker_name else {}

    def _finish_args(
        self,
        job_id: str,
        *,
        target: str,
        value: str,
        token: str,
        keep: dict[str, Any],
        attempts: int,
        attempts_made: int,
        lock_duration_ms: int,
        fetch_next: bool,
        fields: dict[str, Any] | None,
    ) -> tuple[list[str], list[Any]]:
        keys = [
            *self._fetch_keys,
            self.keys[target],
            self.job_key(job_id),
            self.base + "metrics:" + target,
            self.keys["marker"],
        ]
        opts = pack(
            {
                "token": token,
                "keepJobs": keep,
                "limiter": self.limiter,
                "lockDuration": lock_duration_ms,
                "attempts": attempts,
                "attemptsMade": attempts_made,
                "maxMetricsSize": "",
                "fpof": False,
                "cpof": False,
                "idof": False,
                "rdof": False,
                **self._processed_by(),
            }
        )
        prop = "returnvalue" if target == "completed" else "failedReason"
        args: list[Any] = [
            job_id,
            now_ms(),
            prop,
            value,
            target,
            "1" if fetch_next else "",
            self.base,
            opts,
        ]
        if fields:
            args.append(pack(flat(fields)))
        return keys, args

    async def complete(
        self,
        job_id: str,
        token: str,
        return_json: str,
        *,
        keep: dict[str, Any],
        lock_duration_ms: int,
        fetch_next: bool,
    ) -> Fetched:
        """Move an active job to completed; with ``fetch_next`` also take the next job."""
        keys, args = self._finish_args(
            job_id,
            target="completed",
            value=return_json,
            token=token,
            keep=keep,
            attempts=0,
            attempts_made=0,
            lock_duration_ms=lock_duration_ms,
            fetch_next=fetch_next,
            fields=None,
        )
        raw = await self._run("moveToFinished", keys, args, None)
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, "moveToFinished", queue=self.name)
        return fetched(raw)

    async def fail(
        self,
        job: JobRecord,
        token: str,
        *,
        error: str,
        stacktrace: list[str],
        attempts: int,
        keep: dict[str, Any],
        lock_duration_ms: int,
        records: FailureStore,
        failed_at_iso: str,
        failed_at_ms: int,
        fetch_next: bool = False,
        also: Sequence[tuple[AsyncScript, list[Any], list[Any]]] = (),
    ) -> Fetched:
        """Fail a job for good and write its failure record, atomically (one script call,
        ``scripts.move_to_failed_source``); with ``fetch_next`` also take the next job, as
        ``complete`` does; ``also``: script calls to run after it in the same MULTI (they see
        whether the job is failed).

        Raises the lock/state errors of ``complete``; the record is written only when the job
        really is failed, so a refused move leaves no record either.
        """
        if self._auto is None:
            raise ConveyorError("fail() runs on a worker's hot-path connection")
        keys, args = self._finish_args(
            job.id,
            target="failed",
            value=error,
            token=token,
            keep=keep,
            attempts=attempts,
            attempts_made=job.attempts_made,
            lock_duration_ms=lock_duration_ms,
            fetch_next=fetch_next,
            fields={"failedReason": error, "stacktrace": dumps_texts(stacktrace)},
        )
        record_keys = records.record_keys(job.id, self.job_key(job.id))
        record_args: list[Any] = [
            job.id,
            job.name,
            self.name,
            job.raw_data,
            error,
            stacktrace[-1] if stacktrace else "",
            job.attempts_made + 1,
            failed_at_iso,
            failed_at_ms,
            self.prefix,
            *OTHER_QUEUE_RECORD_SUFFIXES,
        ]
        keys += record_keys
        args += record_args
        script = self._scripts[MOVE_TO_FAILED]
        if also:
            # The calls after it go by EVAL: if Redis forgot the first script (NOSCRIPT), they
            # still run, see the job is not failed and change nothing.
            moved, *_ = await self._auto.transaction([(script, keys, args), *also], by_sha=1)
            if isinstance(moved, Exception):
                raise moved
        else:
            moved = await self._auto.call(script, keys, args)
        if isinstance(moved, int) and moved < 0:
            raise script_error(moved, job.id, "moveToFinished", queue=self.name)
        return fetched(moved)

    async def retry_later(
        self,
        job_id: str,
        token: str,
        *,
        delay_ms: int,
        error: str,
        stacktrace: list[str],
        lifo: bool = False,
    ) -> None:
        """Send a failed attempt back: to delayed (with backoff) or straight to wait."""
        now = now_ms()
        fields = pack(
            flat(
                {
                    "failedReason": error,
                    "stacktrace": dumps_texts(stacktrace),
                    DUE_FIELD: str(now + max(delay_ms, 0)),
                }
            )
        )
        if delay_ms > 0:
            keys = self._keys("marker", "active", "prioritized", "delayed")
            keys += [self.job_key(job_id)]
            keys += self._keys("events", "meta", "stalled", "wait", "limiter", "pc")
            args: list[Any] = [self.base, str(now), job_id, token, delay_ms, "0", fields, "0"]
            raw = await self._run("moveToDelayed", keys, args, None)
            command = "moveToDelayed"
        else:
            keys = [*self._keys("active", "wait", "paused"), self.job_key(job_id)]
            keys += self._keys(
                "meta", "events", "delayed", "prioritized", "pc", "marker", "stalled"
            )
            push = "RPUSH" if lifo else "LPUSH"
            raw = await self._run(
                "retryJob", keys, [self.base, now, push, job_id, token, fields], None
            )
            command = "retryJob"
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, command, queue=self.name)

    async def put_back(
        self, job_id: str, token: str, *, delay_ms: int, fields: dict[str, str]
    ) -> None:
        """Move an active job to delayed without counting an attempt (BullMQ's moveToDelayed
        with skipAttempt), setting ``fields`` on its hash in the same script."""
        keys = self._keys("marker", "active", "prioritized", "delayed")
        keys += [self.job_key(job_id)]
        keys += self._keys("events", "meta", "stalled", "wait", "limiter", "pc")
        now = now_ms()
        packed = pack(flat({**fields, DUE_FIELD: str(now + delay_ms)}))
        args = [self.base, str(now), job_id, token, delay_ms, "1", packed, "0"]
        raw = await self._run("moveToDelayed", keys, args, None)
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, "moveToDelayed", queue=self.name)

    async def release_to_wait(self, job_id: str, token: str) -> None:
        """Give an active job back to the queue unfinished (used at shutdown)."""
        keys = self._keys(
            "active",
            "wait",
            "stalled",
            "paused",
            "meta",
            "limiter",
            "prioritized",
            "marker",
            "events",
        )
        await self._run(
            "moveJobFromActiveToWait", keys, [job_id, token, self.job_key(job_id)], None
        )

    def client_name(self, worker_name: str) -> str:
        """The connection name Node's BullMQ uses to list a queue's workers."""
        encoded = base64.b64encode(self.name.encode()).decode()
        return f"{self.prefix}:{encoded}:w:{worker_name}"

    async def extend_locks(
        self, job_ids: list[str], tokens: list[str], duration_ms: int
    ) -> list[str]:
        """Renew many locks in one call; answers the ids whose lock could not be renewed."""
        if not job_ids:
            return []
        raw = await self._run(
            "extendLocks",
            [self.keys["stalled"]],
            [self.base, pack(tokens), pack(job_ids), duration_ms],
            None,
        )
        return [str(j) for j in raw or []]

    async def recover_stalled(self, max_stalled_count: int, interval_ms: int) -> list[str]:
        """BullMQ's stalled-job check: jobs whose lock expired go back to wait."""
        keys = self._keys(
            "stalled",
            "wait",
            "active",
            "stalled-check",
            "meta",
            "paused",
            "marker",
            "events",
            "repeat",
        )
        raw = await self._run(
            "moveStalledJobsToWait",
            keys,
            [max_stalled_count, self.base, now_ms(), interval_ms],
            None,
        )
        return [str(j) for j in raw or []]

    async def wait_for_marker(self, blocking: RespConnection, timeout_s: float) -> int | None:
        """Block until a job may be ready (BullMQ's marker) or ``timeout_s`` passes (or another
        connection sends CLIENT UNBLOCK); answers the marker's score."""
        (result,) = await blocking.execute_many(
            [("BZPOPMIN", self.keys["marker"], f"{timeout_s:.3f}")]
        )
        if isinstance(result, Exception):
            raise result
        if not result:
            return None
        return int(float(result[2]))

    def unblock(self, blocking: RespConnection) -> None:
        """End ``blocking``'s wait_for_marker now, as if it timed out (sent on the hot path;
        nothing happens when either connection is down)."""
        if blocking.client_id is None or self._auto is None:
            return
        connection = self._auto.connection
        if connection.connected:
            connection.send([("CLIENT", "UNBLOCK", blocking.client_id, "TIMEOUT")], [ignore_reply])

    async def update_progress(self, job_id: str, progress: Any) -> None:
        keys = [self.job_key(job_id), self.keys["events"], self.keys["meta"]]
        raw = await self._run("updateProgress", keys, [job_id, dumps(progress)], None)
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, "updateProgress", queue=self.name)

    async def add_log(self, job_id: str, row: str, keep: int = 0) -> int:
        keys = [self.job_key(job_id), self.job_key(job_id) + ":logs"]
        raw = await self._run("addLog", keys, [job_id, row, keep or ""], None)
        return int(raw)
