"""Pure values about jobs: their states.

The retry policy, the backoff arithmetic and the option limits are ``conveyor.policy``; where
Conveyor keeps its own keys (failure records among them) is ``conveyor.keys``.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life, in BullMQ's own words."""

    WAITING = "waiting"
    PRIORITIZED = "prioritized"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"
    WAITING_CHILDREN = "waiting-children"
    UNKNOWN = "unknown"


#: The states counted for a queue, in display order.
COUNTED_STATES: tuple[JobState, ...] = (
    JobState.WAITING,
    JobState.PRIORITIZED,
    JobState.DELAYED,
    JobState.ACTIVE,
    JobState.PAUSED,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.WAITING_CHILDREN,
)
