"""BullMQ 5's legacy repeatable jobs (``Queue.add(name, data, {repeat})``, keys like
``name::::*/5 * * * *`` in the queue's ``repeat`` set): their next run, made as Node.js
BullMQ 5.81's worker makes it (``Repeat.updateRepeatableJob`` with ``override: false``).

BullMQ 6 dropped them (its worker refuses to carry them on); a Conveyor worker carries them on
as BullMQ 5 did, so a queue that still has some keeps them running. The next run's job id is
computed from the repeatable's key and the next slot, and BullMQ adds no second job with an id
it already has: two workers (or one taking the same job again) make one next run per slot.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from conveyor import lua
from conveyor._bullmq.record import JobRecord
from conveyor.clock import now_ms
from conveyor.schedules import cron_next

if TYPE_CHECKING:
    from conveyor._bullmq.queue import BullQueue


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _ms(value: Any) -> int | None:
    """A date as BullMQ 5 keeps it in ``repeat``: epoch ms, or a date string."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def legacy_key(name: str, repeat: dict[str, Any]) -> str:
    """BullMQ 5's ``getRepeatConcatOptions``: ``name:jobId:endDate:tz:pattern|every``."""
    end = _ms(repeat.get("endDate"))
    suffix = repeat.get("pattern") or str(repeat.get("every") or "")
    return (
        f"{name}:{repeat.get('jobId') or ''}:{end if end else ''}:{repeat.get('tz') or ''}:{suffix}"
    )


def next_job_id(name: str, next_ms: int, repeat_key: str, data: Any) -> str:
    """BullMQ 5's ``getRepeatJobKey``."""
    if len(repeat_key.split(":")) > 2:
        data_id = data.get("id") if isinstance(data, dict) else None
        return f"repeat:{_md5(name + str(data_id or '') + _md5(repeat_key))}:{next_ms}"
    return f"repeat:{repeat_key}:{next_ms}"


def next_millis(repeat: dict[str, Any], now: int) -> int | None:
    """BullMQ 5's ``getNextMillis`` (its cron runs computed as ``conveyor.cron`` does)."""
    every = repeat.get("every")
    if every:
        return (now // int(every)) * int(every) + int(every)
    pattern = repeat.get("pattern")
    if not isinstance(pattern, str):
        return None
    tz = repeat.get("tz") if isinstance(repeat.get("tz"), str) else None
    return cron_next(pattern, tz, now, _ms(repeat.get("startDate")), _ms(repeat.get("endDate")))


async def advance_legacy(bull: BullQueue, job: JobRecord) -> str | None:
    """A worker took ``job`` of a legacy repeatable: add its next run; answers its id, or
    None (limit or end reached, or the repeatable was removed)."""
    raw = job.options.get("repeat")
    if not isinstance(raw, dict):
        return None
    repeat = dict(raw)
    if repeat.get("pattern") is None and repeat.get("cron") is not None:
        repeat["pattern"] = repeat.pop("cron")  # BullMQ <= 3's name
    count = int(repeat.get("count") or 0) + 1
    if repeat.get("limit") is not None and count > int(repeat["limit"]):
        return None
    now = now_ms()
    end = _ms(repeat.get("endDate"))
    if end is not None and now > end:
        return None
    prev = int(job.options.get("prevMillis") or 0)
    now = max(now, prev)
    nxt = await asyncio.to_thread(next_millis, repeat, now)  # off the loop: see schedulers
    if not nxt:
        return None
    legacy = legacy_key(job.name, repeat)
    key = repeat.get("key") or _md5(legacy)
    script = bull.redis.register_script(lua.source("repeatable_millis"))
    repeat_key = str(await script(keys=[bull.keys["repeat"]], args=[nxt, key, legacy]) or "")
    if not repeat_key:
        return None
    job_id = next_job_id(job.name, nxt, repeat_key, job.data)
    stamp = now_ms()
    offset = int(repeat.get("offset") or 0)
    options = {
        **job.options,
        "jobId": job_id,
        "delay": max(nxt + offset - stamp, 0),
        "timestamp": stamp,
        "prevMillis": nxt,
        "repeatJobKey": repeat_key,
        "repeat": {**{k: v for k, v in repeat.items() if k != "immediately"}, "count": count},
    }
    await bull.add_job(
        job_id, job.name, job.raw_data, options, timestamp=stamp, repeat_job_key=repeat_key
    )
    return job_id
