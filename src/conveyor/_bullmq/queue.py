"""``BullQueue``: the script calls of one BullMQ queue (prefix + name) on one Redis client.

Every job Conveyor writes goes through BullMQ's own scripts (``scripts``), so it is a BullMQ
job; what they return comes back decoded (``record``). Each call takes an optional pipeline
so callers can batch.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from conveyor._bullmq.layout import FETCH_KEY_TYPES, KEY_TYPES
from conveyor._bullmq.record import DUE_FIELD, JobRecord, as_dict, dumps
from conveyor._bullmq.scripts import SCRIPT_FILES, script_error, script_source
from conveyor.clock import now_ms
from conveyor.errors import ConveyorError, JobStateError
from conveyor.failures import FailureStore, parse_sweep
from conveyor.jobs import JobState
from conveyor.keys import FailureKeys
from conveyor.pipeline import AutoPipeline
from conveyor.resp import RespConnection, ignore_reply


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _flat(pairs: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key, value in pairs.items():
        out.extend((key, value))
    return out


@dataclass(frozen=True)
class Fetched:
    """What moveToActive (or a finish that fetched the next job) returned."""

    job: JobRecord | None
    #: When rate limited: ms until the limit lifts.
    limit_until_ms: int = 0
    #: When nothing is ready: timestamp (ms) of the next delayed job, 0 if none.
    next_delayed_ms: int = 0


def fetched(raw: Any) -> Fetched:
    if not raw or not isinstance(raw, list | tuple):
        return Fetched(job=None)
    job = None
    if raw[0]:
        job = JobRecord.from_hash(str(raw[1]), as_dict(raw[0]))
    limit = int(raw[2] or 0) if len(raw) > 2 else 0
    delayed = int(raw[3] or 0) if len(raw) > 3 else 0
    return Fetched(job=job, limit_until_ms=limit, next_delayed_ms=delayed)


def _state(raw: Any) -> JobState:
    try:
        return JobState(str(raw))
    except ValueError:
        return JobState.UNKNOWN


@dataclass(frozen=True)
class CleanedBatch:
    """What one bounded cleanup step of the failed set removed."""

    #: Failed jobs removed (hash, logs, set entry), by BullMQ's cleanJobsInSet.
    job_ids: list[str]
    #: Failure records removed with their index entries.
    records_removed: int
    #: Index entries in the window that stay (another queue's, or their job is still failed).
    records_kept: int
    #: Index entries dropped because their record no longer existed.
    index_entries_dropped: int
    #: Index entries the window looked at (equal to the limit: there may be more).
    examined: int


class BullQueue:
    """One BullMQ queue (prefix + name) on one Redis client: keys plus script calls."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        prefix: str = "bull",
        *,
        hot_path: RespConnection | None = None,
    ) -> None:
        self.redis = redis
        #: With a hot-path connection, script calls made without an explicit pipeline are
        #: batched per event-loop tick on it (the worker's fast path).
        self._auto = AutoPipeline(hot_path) if hot_path is not None else None
        self.name = name
        self.prefix = prefix
        #: Set by a worker: stored on each job it takes as BullMQ's ``processedBy``.
        self.worker_name: str | None = None
        self.base = f"{prefix}:{name}:"
        self.keys = {kind: f"{prefix}:{name}:{kind}" for kind in KEY_TYPES}
        #: The keys BullMQ's moveToActive and moveToFinished start with (hot path: built once).
        self._fetch_keys = self._keys(*FETCH_KEY_TYPES)
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(script_source(name)) for name in SCRIPT_FILES
        }

    def job_key(self, job_id: str) -> str:
        return self.base + job_id

    def failure_store(self, failed_key_prefix: str = "failedJobs") -> FailureStore:
        """The failure records of this queue (see ``conveyor.keys.FailureKeys``)."""
        keys = FailureKeys(self.prefix, self.name, failed_key_prefix)
        return FailureStore(self.redis, keys, failed_set=self.keys["failed"])

    def _keys(self, *kinds: str) -> list[str]:
        return [self.keys[k] for k in kinds]

    def _run(self, script: str, keys: list[str], args: list[Any], pipe: Pipeline | None) -> Any:
        if pipe is None and self._auto is not None:
            return self._auto.call(self._scripts[script], keys, args)
        return self._scripts[script](keys=keys, args=args, client=pipe)

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
    ) -> Any:
        """Add one job (standard, delayed or prioritized, as BullMQ's Queue.add does).

        Answers the job id, or queues the call on ``pipe``. An existing id is left as it is
        (BullMQ's duplicate rule).
        """
        ts = timestamp if timestamp is not None else now_ms()
        packed_args = _pack([self.base, job_id, name, ts, None, None, None, None, None])
        args: list[Any] = [packed_args, data_json, _pack(options)]
        if options.get("delay"):
            keys = self._keys("marker", "meta", "id", "delayed", "completed", "events")
            return await self._run("addDelayedJob", keys, [*args, ts], pipe)
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
            return await self._run("addPrioritizedJob", keys, [*args, ts], pipe)
        keys = self._keys(
            "wait", "paused", "meta", "id", "completed", "delayed", "active", "events", "marker"
        )
        return await self._run("addStandardJob", keys, [*args, ts], pipe)

    # --- the worker's cycle ------------------------------------------------------------------
    async def move_to_active(self, token: str, lock_duration_ms: int) -> Fetched:
        keys = [*self._fetch_keys, self.keys["marker"]]
        opts = _pack(
            {
                "token": token,
                "lockDuration": lock_duration_ms,
                "limiter": None,
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
        opts = _pack(
            {
                "token": token,
                "keepJobs": keep,
                "limiter": None,
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
            args.append(_pack(_flat(fields)))
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
    ) -> Fetched:
        """Fail a job for good and write its failure record, atomically (one MULTI); with
        ``fetch_next`` also take the next job, as ``complete`` does.

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
            fields={"failedReason": error, "stacktrace": dumps(stacktrace)},
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
        ]
        # The record goes by EVAL: if Redis forgot moveToFinished (NOSCRIPT), the record script
        # still runs, sees the job is not failed and writes nothing.
        moved, _ = await self._auto.transaction(
            [
                (self._scripts["moveToFinished"], keys, args),
                (records.record_script, record_keys, record_args),
            ],
            by_sha=1,
        )
        if isinstance(moved, Exception):
            raise moved
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
        fields = _pack(
            _flat(
                {
                    "failedReason": error,
                    "stacktrace": dumps(stacktrace),
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
        packed = _pack(_flat({**fields, DUE_FIELD: str(now + delay_ms)}))
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
            [self.base, _pack(tokens), _pack(job_ids), duration_ms],
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

    # --- job and queue queries ---------------------------------------------------------------
    async def get_job(self, job_id: str) -> JobRecord | None:
        raw: dict[str, str] = await self.redis.hgetall(self.job_key(job_id))  # type: ignore[assignment]
        return JobRecord.from_hash(job_id, raw) if raw else None

    async def get_jobs(self, job_ids: list[str]) -> list[JobRecord]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.job_key(job_id))
            raws = await pipe.execute()
        return [JobRecord.from_hash(j, r) for j, r in zip(job_ids, raws, strict=True) if r]

    async def get_state(self, job_id: str, pipe: Pipeline | None = None) -> JobState:
        keys = self._keys(
            "completed", "failed", "delayed", "active", "wait", "paused", "waiting-children",
            "prioritized",
        )  # fmt: skip
        raw = await self._run("getStateV2", keys, [job_id, self.job_key(job_id)], pipe)
        return _state(raw)

    async def get_job_with_state(self, job_id: str) -> tuple[JobRecord | None, JobState]:
        """The job hash and its state read in one MULTI, so they agree."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await self.get_state(job_id, pipe)
            await pipe.hgetall(self.job_key(job_id))
            state, raw = await pipe.execute()
        info = JobRecord.from_hash(job_id, raw) if raw else None
        return info, _state(state)

    async def get_counts(self, states: list[JobState]) -> dict[JobState, int]:
        names = ["wait" if s is JobState.WAITING else s.value for s in states]
        raw = await self._run("getCounts", [self.keys[""]], names, None)
        return {s: int(n or 0) for s, n in zip(states, raw, strict=True)}

    async def get_range(
        self, states: list[JobState], start: int, end: int, *, ascending: bool = False
    ) -> list[str]:
        """Job ids in the given states, newest first unless ``ascending``."""
        names = ["wait" if s is JobState.WAITING else s.value for s in states]
        raw = await self._run(
            "getRanges", [self.keys[""]], [start, end, "1" if ascending else "0", *names], None
        )
        ids: list[str] = []
        for name, part in zip(names, raw, strict=True):
            part = list(part or [])
            if ascending and name in ("wait", "active", "paused"):
                part.reverse()
            ids.extend(str(j) for j in part)
        return ids

    async def remove(self, job_id: str, *, records: FailureStore) -> bool:
        """Remove a job that is not locked (and its failure record); False when a worker holds
        it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._run(
                "removeJob",
                [self.job_key(job_id), self.keys["repeat"]],
                [job_id, 1, self.base],
                pipe,
            )
            await records.forget(job_id, pipe)
            removed, _ = await pipe.execute()
        return bool(removed and int(removed) == 1)

    async def reprocess(
        self, job_id: str, state: JobState, *, records: FailureStore, lifo: bool = False
    ) -> None:
        """Move a finished (failed or completed) job back to wait, as BullMQ's Job.retry, and
        drop its failure record in the same transaction."""
        keys = [self.job_key(job_id), self.keys["events"], self.keys[state.value]]
        keys += self._keys("wait", "meta", "active", "marker", "prioritized", "pc")
        prop = "failedReason" if state is JobState.FAILED else "returnvalue"
        args = [job_id, "RPUSH" if lifo else "LPUSH", prop, state.value, "1", "0"]
        async with self.redis.pipeline(transaction=True) as pipe:
            await self._run("reprocessJob", keys, args, pipe)
            await records.forget(job_id, pipe)
            raw, _ = await pipe.execute()
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, "reprocessJob", queue=self.name)

    async def pause(self, paused: bool) -> None:
        """Pause or resume the queue for every worker (BullMQ's pause script plus the
        paused-layout guard: a pause keeps waiting jobs where BullMQ 5 expects them, a resume
        moves every job in "paused" back to "wait" in the same call)."""
        src, dst = ("wait", "paused") if paused else ("paused", "wait")
        keys = self._keys(src, dst, "meta", "prioritized", "events", "delayed", "marker")
        await self._run("pause", keys, ["paused" if paused else "resumed"], None)

    async def is_paused(self) -> bool:
        return bool(await self.redis.hexists(self.keys["meta"], "paused"))

    async def update_progress(self, job_id: str, progress: Any) -> None:
        keys = [self.job_key(job_id), self.keys["events"], self.keys["meta"]]
        raw = await self._run("updateProgress", keys, [job_id, dumps(progress)], None)
        if isinstance(raw, int) and raw < 0:
            raise script_error(raw, job_id, "updateProgress", queue=self.name)

    async def add_log(self, job_id: str, row: str, keep: int = 0) -> int:
        keys = [self.job_key(job_id), self.job_key(job_id) + ":logs"]
        raw = await self._run("addLog", keys, [job_id, row, keep or ""], None)
        return int(raw)

    async def get_logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        rows = await self.redis.lrange(self.job_key(job_id) + ":logs", start, end)
        return [str(r) for r in rows]

    # --- cleanup -------------------------------------------------------------------------------
    async def clean(
        self, state: JobState, older_than_ms: int, limit: int, pipe: Pipeline | None = None
    ) -> list[str]:
        """BullMQ's Queue.clean on a finished set: remove up to ``limit`` jobs that finished at
        or before ``older_than_ms`` (their hash and logs too); answers their ids. With
        ``pipe`` the call is only queued: the ids come back from ``pipe.execute()``."""
        if state not in (JobState.COMPLETED, JobState.FAILED):
            raise JobStateError(f"only completed or failed jobs can be cleaned, not {state}")
        if limit < 1:
            raise ValueError("limit must be at least 1 (0 would mean unlimited to BullMQ)")
        keys = [self.keys[state.value], self.keys["events"], self.keys["repeat"]]
        raw = await self._run(
            "cleanJobsInSet", keys, [self.base, older_than_ms, limit, state.value], pipe
        )
        return [str(j) for j in raw or []] if pipe is None else []

    async def clean_failed(
        self,
        older_than_ms: int,
        limit: int,
        *,
        records: FailureStore,
        index: str | None = None,
        offset: int = 0,
    ) -> CleanedBatch:
        """One bounded step of failure cleanup, consistent across both stores.

        In one MULTI: up to ``limit`` failed jobs older than the cutoff are removed, then one
        window of a failure index (``index``: the queue's own by default, or the legacy one
        being drained; ``offset``, ``limit``) is swept of this queue's records whose job is
        gone. The records of the jobs just removed are then removed by key, at their key and
        their legacy key (in case their record was written a moment after the job's
        finishedOn, or sits outside the window).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        walked = index or records.keys.index
        async with self.redis.pipeline(transaction=True) as pipe:
            await self.clean(JobState.FAILED, older_than_ms, limit, pipe=pipe)
            await records.sweep(
                walked,
                cutoff_ms=older_than_ms,
                offset=offset,
                limit=limit,
                keep_removed=False,
                pipe=pipe,
            )
            cleaned, swept = await pipe.execute()
        job_ids = [str(j) for j in cleaned or []]
        window = parse_sweep(swept)
        removed = window.removed
        if job_ids:
            keys = records.keys
            record_keys = [keys.record(j) for j in job_ids]
            record_keys += [keys.legacy_record(j) for j in job_ids]
            explicit = await records.sweep(
                walked, cutoff_ms=older_than_ms, keep_removed=False, record_keys=record_keys
            )
            assert explicit is not None
            removed += explicit.removed
        return CleanedBatch(job_ids, removed, window.kept, window.dangling, window.examined)

    # --- the event stream ---------------------------------------------------------------------
    async def read_events(self, after: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries of the queue's event stream after the entry id ``after``
        (``"0"``: from the start), oldest first."""
        start = "-" if after in ("", "0", "0-0") else _next_stream_id(after)
        raw: Any = await self.redis.xrange(self.keys["events"], start, "+", count=count)
        return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in raw or []]

    async def last_event_id(self) -> str:
        """The id of the newest entry of the queue's event stream ("0" when it is empty)."""
        raw = await self.redis.xrevrange(self.keys["events"], "+", "-", count=1)
        return str(raw[0][0]) if raw else "0"


def _next_stream_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (XRANGE's exclusive start needs Redis 6.2)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
