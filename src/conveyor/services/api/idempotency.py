"""What an ``Idempotency-Key`` stands for: one whole request, fingerprinted.

The key names the request's jobs (``idem-<sha256 of the key>`` for ``POST /enqueue``, with
``-<index>`` for job *i* of ``POST /enqueue/bulk``), and every job it made carries the
request's fingerprint in its BullMQ hash (field ``conveyorIdem``; BullMQ ignores fields it
does not know), so the fingerprint lives exactly as long as the jobs. A request under a key
*probes* its own ids plus the first id of the other endpoint's scheme: a probe that exists with
another fingerprint means the key already stood for another request (another task, payload,
options, batch size or endpoint), which is refused (422) with nothing written.

The probe and the adds run under WATCH of every probed key, so a request that races another
under the same key either sees its jobs or writes alone (the EXEC of the loser fails and it
probes again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic_core import from_json

IDEMPOTENT_PREFIX = "idem-"
#: The job hash field that holds the fingerprint of the request that made the job.
FINGERPRINT_FIELD = "conveyorIdem"

Endpoint = Literal["enqueue", "bulk"]


def idempotent_job_id(key: str, index: int | None = None) -> str:
    """The job id an Idempotency-Key stands for (``index``: the job's place in a bulk)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{IDEMPOTENT_PREFIX}{digest}" + ("" if index is None else f"-{index}")


def probe_ids(key: str, endpoint: Endpoint, count: int) -> list[str]:
    """The ids a request under ``key`` must look at: its own jobs' ids, then the first id of
    the other endpoint's scheme (so a key used on one endpoint cannot make jobs on the other)."""
    if endpoint == "enqueue":
        return [idempotent_job_id(key), idempotent_job_id(key, 0)]
    return [*(idempotent_job_id(key, i) for i in range(count)), idempotent_job_id(key)]


def _canonical(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def job_digest(name: str, data_json: str, options: dict[str, Any]) -> bytes:
    """One job of a request, as the fingerprint sees it: the task, the stored payload and the
    options as sent, with object keys in a canonical order."""
    return _canonical([name, from_json(data_json), options])


def fingerprint(endpoint: Endpoint, digests: Sequence[bytes]) -> str:
    """The fingerprint of a whole request: its endpoint and every job, in order."""
    hasher = hashlib.sha256(endpoint.encode())
    for digest in digests:
        hasher.update(len(digest).to_bytes(8, "big"))
        hasher.update(digest)
    return hasher.hexdigest()
