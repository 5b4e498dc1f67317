"""BullMQ's Lua scripts as Conveyor runs them: the pinned files inside the ``bullmq`` package
(the same scripts Node.js BullMQ runs), each with the paused-layout guard where it needs one,
and the translation of their error codes."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import bullmq

from conveyor import lua
from conveyor.errors import ConveyorError, JobLockLostError, JobNotFoundError, JobStateError

_COMMANDS_DIR = Path(bullmq.__file__).parent / "commands"

#: Our name for each BullMQ script -> its file inside the bullmq package.
SCRIPT_FILES = {
    "addStandardJob": "addStandardJob-9.lua",
    "addDelayedJob": "addDelayedJob-6.lua",
    "addPrioritizedJob": "addPrioritizedJob-9.lua",
    "moveToActive": "moveToActive-11.lua",
    "moveToFinished": "moveToFinished-14.lua",
    "moveToDelayed": "moveToDelayed-11.lua",
    "retryJob": "retryJob-11.lua",
    "extendLocks": "extendLocks-1.lua",
    "moveStalledJobsToWait": "moveStalledJobsToWait-9.lua",
    "getCounts": "getCounts-1.lua",
    "getStateV2": "getStateV2-8.lua",
    "getRanges": "getRanges-1.lua",
    "removeJob": "removeJob-2.lua",
    "reprocessJob": "reprocessJob-9.lua",
    "pause": "pause-7.lua",
    "updateProgress": "updateProgress-3.lua",
    "addLog": "addLog-2.lua",
    "promote": "promote-9.lua",
    "moveJobFromActiveToWait": "moveJobFromActiveToWait-9.lua",
    "cleanJobsInSet": "cleanJobsInSet-3.lua",
    "addJobScheduler": "addJobScheduler-11.lua",
    "updateJobScheduler": "updateJobScheduler-12.lua",
    "removeJobScheduler": "removeJobScheduler-3.lua",
    "getJobScheduler": "getJobScheduler-1.lua",
}

#: Node.js BullMQ before 6 keeps a paused queue's waiting jobs in "paused", where BullMQ 6's
#: scripts leave them in "wait": ``lua/paused_layout.lua`` (its comment says how) runs after
#: each script that can put a job in "wait" (or pause), in the same script call.
#: The scripts that can put a job in "wait" (or pause the queue) -> the position of the meta
#: key in their KEYS. addDelayedJob and addPrioritizedJob only push to a wait list for parent
#: jobs (flows), which Conveyor never creates.
_PAUSED_LAYOUT_META_KEY = {
    "addStandardJob": 3,
    "moveToActive": 9,
    "moveToFinished": 9,
    "moveToDelayed": 7,
    "retryJob": 5,
    "moveStalledJobsToWait": 5,
    "moveJobFromActiveToWait": 5,
    "reprocessJob": 5,
    "promote": 4,
    "pause": 3,
    "addJobScheduler": 5,
    "updateJobScheduler": 5,
}


#: The scripts that take a job for a worker -> what runs before them when the queue is under
#: a manual hold (``lua/limit_held.lua``): moveToActive answers "rate limited" at once, and
#: moveToFinished finishes the job without fetching the next one. Both have the limiter key
#: at KEYS[6] and moveToFinished's "fetch next?" flag is ARGV[6].
_HOLD_CHECK = {
    "moveToActive": (
        "local conveyorHeld = conveyorLimitHeld(KEYS[6])\n"
        "if conveyorHeld > 0 then return {0, 0, conveyorHeld, 0} end\n"
    ),
    "moveToFinished": (
        'if ARGV[6] == "1" and conveyorLimitHeld(KEYS[6]) > 0 then ARGV[6] = "" end\n'
    ),
}


def _check_key(source: str, file: str, index: int, kind: str) -> None:
    if f"KEYS[{index}]" not in source or kind not in source.split(f"KEYS[{index}]", 1)[1][:40]:
        raise ConveyorError(f"bullmq's {file} no longer has its {kind} key at KEYS[{index}]")


@cache
def script_source(name: str) -> str:
    """A pinned script's text; with the paused-layout guard run after it when it needs one,
    and the manual-hold check before it when it takes jobs."""
    file = SCRIPT_FILES[name]
    source = (_COMMANDS_DIR / file).read_text()
    meta = _PAUSED_LAYOUT_META_KEY.get(name)
    if meta is None:
        return source
    _check_key(source, file, meta, "meta")
    before = ""
    if name in _HOLD_CHECK:
        _check_key(source, file, 6, "limiter")
        before = f"{lua.source('limit_held')}\n{_HOLD_CHECK[name]}"
    resuming = "ARGV[1] == 'resumed'" if name == "pause" else "false"
    shares = name in _SHARES_META_READ
    if shares:
        source = _noting_paused(source, file, meta)
    return with_paused_layout(source, meta, resuming, before, paused_seen=shares)


#: BullMQ's own read of the queue's meta hash in the scripts that take jobs (its
#: getQueueMetadata: moveToActive runs it always, moveToFinished when it fetches the next job).
#: It already answers what the paused-layout guard after them asks first: is the queue paused?
#: Nothing in these scripts pauses or resumes a queue, so the answer holds at their end; it is
#: noted (``conveyorPausedSeen``) and the guard's own HMGET runs only when the queue is paused
#: or the read did not happen (one command less per job on the worker's hot path).
_META_READ = 'local queueAttributes = rcall("HMGET", queueMetaKey, "paused", "concurrency", "max", "duration")\n'  # noqa: E501
_SHARES_META_READ = frozenset({"moveToActive", "moveToFinished"})


def _noting_paused(source: str, file: str, meta: int) -> str:
    if source.count(_META_READ) != 1:
        raise ConveyorError(f"bullmq's {file} no longer reads the queue's meta as expected")
    noted = f"if queueMetaKey == KEYS[{meta}] then conveyorPausedSeen = queueAttributes[1] end\n"
    return source.replace(_META_READ, _META_READ + noted)


def with_paused_layout(
    source: str,
    meta: int,
    resuming: str = "false",
    before: str = "",
    *,
    paused_seen: bool = False,
) -> str:
    """``source`` (a whole script) followed, in the same call, by the paused-layout guard on
    the meta key at ``KEYS[meta]``: for every script that can put a job in "wait". ``before``
    runs first (Lua statements). ``paused_seen``: ``source`` sets ``conveyorPausedSeen`` to
    the meta hash's ``paused`` field (false: not paused) when it reads it, and then the
    guard, which does nothing on a queue that is not paused, is skipped."""
    guard = f"conveyorPausedLayout(KEYS[{meta}], {resuming})\n"
    if paused_seen:
        guard = f"if conveyorPausedSeen ~= false then {guard}end\n"
    return (
        ("local conveyorPausedSeen = nil\n" if paused_seen else "")
        + "local function conveyorBullmqScript()\n"
        f"{source}\n"
        "end\n"
        f"{lua.source('paused_layout')}\n"
        f"{before}"
        "local conveyorResult = conveyorBullmqScript()\n"
        f"{guard}"
        "return conveyorResult\n"
    )


#: Conveyor's name for moveToFinished followed by the failure record in the same call.
MOVE_TO_FAILED = "moveToFailed"
#: moveToFinished's KEYS and ARGV (with its job fields): the record's come after them.
_FINISH_KEYS, _FINISH_ARGS = 14, 9
#: The record's KEYS and ARGV (``FailureStore.record_keys``, ``BullQueue.fail``).
_RECORD_KEYS, _RECORD_ARGS = 6, 12


def _items(table: str, first: int, count: int) -> str:
    """``KEYS[15], KEYS[16], …``: a Lua table constructor's items (built at its size at once)."""
    return ", ".join(f"{table}[{i}]" for i in range(first, first + count))


@cache
def move_to_failed_source() -> str:
    """moveToFinished (as ``script_source`` makes it) and then, in the same call, the failure
    record (``lua/failure_record.lua``) when the move succeeded: a job failed for good and
    its record are one script, so neither can exist without the other whatever dies when,
    and a NOSCRIPT means that nothing ran. KEYS: moveToFinished's 14, then the record's 6;
    ARGV: moveToFinished's 9 (job fields included), then the record's 12."""
    return (
        "local function conveyorFailureRecord(KEYS, ARGV)\n"
        f"{lua.source('failure_record')}\n"
        "end\n"
        "local function conveyorMoveToFinished()\n"
        f"{script_source('moveToFinished')}\n"
        "end\n"
        "local conveyorMoved = conveyorMoveToFinished()\n"
        'if type(conveyorMoved) ~= "number" or conveyorMoved >= 0 then\n'
        # "1": moved just now, the record needs no check
        f"  conveyorFailureRecord({{{_items('KEYS', _FINISH_KEYS + 1, _RECORD_KEYS)}}},\n"
        f'    {{{_items("ARGV", _FINISH_ARGS + 1, _RECORD_ARGS)}, "1"}})\n'
        "end\n"
        "return conveyorMoved\n"
    )


# BullMQ error codes returned by its scripts.
_CODE_MISSING_JOB = -1
_CODE_MISSING_LOCK = -2
_CODE_NOT_IN_STATE = -3
_CODE_LOCK_MISMATCH = -6


def script_error(code: int, job_id: str, command: str, *, queue: str) -> ConveyorError:
    """Translate a BullMQ script's negative return code into a Conveyor error."""
    if code == _CODE_MISSING_JOB:
        return JobNotFoundError(job_id, queue)
    if code in (_CODE_MISSING_LOCK, _CODE_LOCK_MISMATCH):
        return JobLockLostError(f"{command}: job {job_id} is no longer locked by this worker")
    if code == _CODE_NOT_IN_STATE:
        return JobStateError(f"{command}: job {job_id} is not in the expected state")
    return ConveyorError(f"{command}: BullMQ script returned code {code} for job {job_id}")
