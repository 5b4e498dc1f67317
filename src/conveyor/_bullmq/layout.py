"""BullMQ's key layout for one queue: the names it keeps under ``{prefix}:{queue}:``, and which
ids can name a job at all. (Conveyor's own keys are ``conveyor.keys``.)"""

from __future__ import annotations

import re

from conveyor.keys import CONVEYOR_KEY_SPACE

#: The first keys of moveToActive and moveToFinished, in BullMQ's order.
FETCH_KEY_TYPES = (
    "wait", "active", "prioritized", "events", "stalled", "limiter", "delayed", "paused",
    "meta", "pc",
)  # fmt: skip


KEY_TYPES = (
    "",
    "active",
    "wait",
    "waiting-children",
    "paused",
    "completed",
    "failed",
    "delayed",
    "repeat",
    "stalled",
    "limiter",
    "prioritized",
    "id",
    "stalled-check",
    "meta",
    "pc",
    "events",
    "marker",
    "de",
)
#: Names BullMQ keeps directly under a queue's prefix besides those above (QueueKeys): Node's
#: ``migrations`` set, the old ``delay`` key that obliterate still deletes, and the roots of
#: the metrics (``metrics:completed``) and deduplication (``dn:{id}``) keys.
OTHER_KEY_NAMES = ("migrations", "delay", "metrics", "dn")
#: Ids no job may have: each one is (or roots) one of the queue's own keys, which a job hash
#: (``{prefix}:{queue}:{id}``) would overwrite or a removal would delete.
RESERVED_JOB_IDS = frozenset({*KEY_TYPES, *OTHER_KEY_NAMES, CONVEYOR_KEY_SPACE} - {""})


#: The one id with ``:`` that names a job: a job scheduler's (or legacy repeatable job's) run,
#: ``repeat:{scheduler id}:{slot ms}``, whose hash BullMQ keeps at ``…:repeat:{id}:{ms}``.
SCHEDULED_JOB_ID = re.compile(r"repeat:[^:/]+:[0-9]+")


def is_job_id(job_id: object) -> bool:
    """Whether ``job_id`` can name a job of a queue at all: a non-empty string without ``:``
    (every key beyond the job hash itself is ``{id}:…``) that is not one of the queue's own
    key names, or a schedule's run (``SCHEDULED_JOB_ID``). Anything else is answered "not
    found" without touching Redis."""
    if not isinstance(job_id, str) or not job_id:
        return False
    if ":" in job_id:
        return SCHEDULED_JOB_ID.fullmatch(job_id) is not None
    return job_id not in RESERVED_JOB_IDS
