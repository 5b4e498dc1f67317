"""A BullMQ job hash, decoded: ``JobRecord``, the public read model of a job, with typed
accessors. The camelCase of BullMQ's hash fields and job options is read here and nowhere else
(``conveyor.policy`` reads ``attempts`` and ``backoff``, the same words in both)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from json.encoder import encode_basestring
from typing import Any

from pydantic_core import from_json

#: A job hash field of Conveyor's own: when the job sent back for a retry (or put back) is due
#: again, in ms. BullMQ keeps only the creation time and the last delay, which would count a
#: retry's wait from the first enqueue, earlier attempts and backoff included.
DUE_FIELD = "cvDue"


def dumps(value: Any) -> str:
    """Compact JSON as BullMQ writes it (NaN refused, unicode kept)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def dumps_texts(texts: Iterable[str]) -> str:
    """``dumps`` of a list of strings (a job's stack traces), without json.dumps's set-up of
    an encoder per call (the same text: compact, unicode kept)."""
    return "[" + ",".join([encode_basestring(text) for text in texts]) + "]"


def as_dict(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return raw
    pairs = iter(raw or ())
    return dict(zip(pairs, pairs, strict=False))


def loads(raw: str | None, default: Any) -> Any:
    """Decode JSON text from a job hash, every integer exact whatever its size; text that is
    not JSON comes back as it is.

    pydantic-core's parser (the one the API validates requests with): as fast as orjson here,
    but orjson turns integers beyond 64 bits into rounded floats (2**64 + 1 came back as
    1.8446744073709552e19, and a typed task then failed "invalid payload").
    """
    if raw is None or raw == "":
        return default
    try:
        return from_json(raw, allow_inf_nan=False)
    except ValueError:
        return raw


def _int(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        return 0


@dataclass(frozen=True)
class JobRecord:
    """A snapshot of one job as BullMQ (Node or Python) stored it, in Conveyor's words: what
    ``QueueClient`` answers about a job, and what a worker runs.

    The JSON fields a worker rarely needs (data, progress, return value, stack traces) are
    decoded on first use: a worker takes thousands of jobs a second and reads only some.
    ``options`` are the stored BullMQ options as they are (camelCase); the ones Conveyor acts
    on have typed accessors below.
    """

    id: str
    name: str
    options: dict[str, Any]
    timestamp: int
    attempts_made: int
    attempts_started: int
    stalled_count: int
    delay: int
    priority: int
    processed_on: int | None
    finished_on: int | None
    failed_reason: str | None
    deferred_failure: str | None
    raw_data: str
    #: The name of the worker (Conveyor or Node) that took the job last.
    processed_by: str | None = None
    #: The hash as read (decoded lazily by the properties below).
    raw: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def data(self) -> Any:
        return loads(self.raw_data, {})

    @cached_property
    def progress(self) -> Any:
        return loads(self.raw.get("progress"), 0)

    @cached_property
    def return_value(self) -> Any:
        return loads(self.raw.get("returnvalue"), None)

    @property
    def lifo(self) -> bool:
        """Whether a retry goes to the front of the wait list (``lifo``)."""
        return bool(self.options.get("lifo"))

    @property
    def remove_on_complete(self) -> Any:
        """BullMQ's ``removeOnComplete``: None, a bool, a count or ``{age, count}``."""
        return self.options.get("removeOnComplete")

    @property
    def remove_on_fail(self) -> Any:
        """BullMQ's ``removeOnFail``, in the same forms."""
        return self.options.get("removeOnFail")

    @property
    def repeat_key(self) -> str | None:
        """BullMQ's ``repeatJobKey`` (hash field ``rjk``): the job scheduler (or legacy
        repeatable job) that made this job, if any."""
        return self.raw.get("rjk") or None

    @property
    def due_ms(self) -> int:
        """When the current (or last) attempt became due: enqueue time plus delay for the
        first; for a retry or a put-back, the due time recorded when it was sent back."""
        recorded = self.raw.get(DUE_FIELD)
        if recorded is not None and recorded.isdigit():
            return int(recorded)
        return self.timestamp + self.delay

    @cached_property
    def stacktrace(self) -> list[str]:
        stack = loads(self.raw.get("stacktrace"), [])
        return [str(s) for s in stack] if isinstance(stack, list) else []

    @classmethod
    def from_hash(cls, job_id: str, raw: dict[str, str]) -> JobRecord:
        """Decode a job hash as BullMQ (Node or Python) wrote it."""
        get = raw.get
        opts = loads(get("opts"), {})
        if not isinstance(opts, dict):
            opts = {}
        elif "de" in opts:  # BullMQ stores ``deduplication`` under its short name
            opts["deduplication"] = opts.pop("de")
        return cls(
            id=job_id,
            name=get("name", ""),
            options=opts,
            timestamp=_int(get("timestamp")),
            attempts_made=_int(get("atm") or get("attemptsMade")),
            attempts_started=_int(get("ats")),
            stalled_count=_int(get("stc")),
            delay=_int(get("delay")),
            priority=_int(get("priority")),
            processed_on=_int(get("processedOn")) or None,
            finished_on=_int(get("finishedOn")) or None,
            failed_reason=get("failedReason") or None,
            deferred_failure=get("defa") or None,
            raw_data=get("data", "{}"),
            processed_by=get("pb") or None,
            raw=raw,
        )


@dataclass(frozen=True)
class FailureSummary:
    """The few fields of a failed job that grouping failures needs."""

    job_id: str
    name: str | None
    failed_reason: str | None
    #: When it failed (ms), 0 if unknown.
    finished_on: int


def event_job_id(fields: dict[str, str]) -> str | None:
    """The job an entry of the queue's event stream is about (BullMQ's ``jobId`` field)."""
    return fields.get("jobId")
