"""Per-task limits: ``@registry.task(..., rate_limit="10/s", concurrency=2)``.

BullMQ's scripts take the next job of the queue whatever its name, so a limit on one task is
Conveyor's own, checked after the job is taken and before its handler runs: one script
(``lua/task_slot.lua``) checks and takes the task's slot atomically, so the limit holds across
every Conveyor worker on any number of hosts. A job that may not start now goes back to the
delayed set without spending an attempt (BullMQ's moveToDelayed with skipAttempt), for the end
of the task's rate window, or ``CONCURRENCY_RETRY_MS`` when its concurrency is reached.

What that costs, and what is not exact (docs/flow-control.md#per-task-limits): a put-back job
loses its place in the queue; each put-back is a start in BullMQ's eyes (``attemptsStarted``,
the queue-wide rate limit's counter, an ``active`` event); Node workers know nothing of these
limits.

If the process dies: after the slot is taken, the job is locked and the slot is freed when its
lock expires (the script drops members whose lock is gone); between a refusal and the
put-back, the job is still locked and the stalled-job check recovers it as any other.
"""

from __future__ import annotations

#: When a task's concurrency is reached: how long its job waits before it is tried again.
CONCURRENCY_RETRY_MS = 500
#: The reply of ``lua/task_slot.lua`` when the task's concurrency is reached.
CONCURRENCY_REACHED = -1


def put_back_delay_ms(reply: int) -> int | None:
    """None when the job may start now; else how long to put it back for."""
    if reply == 0:
        return None
    if reply == CONCURRENCY_REACHED:
        return CONCURRENCY_RETRY_MS
    return max(reply, 1)
