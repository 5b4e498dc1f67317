"""What a supervisor does when one of its worker processes dies: put back at once the jobs
whose lock the dead process still holds (its name is the prefix of its lock tokens), on every
queue it served, instead of leaving them to lock expiry and the stalled-job check (30 s and
more).

The supervisor has reaped the process, so it knows it is dead: no heartbeat check. The
dead process's heartbeat is left for its peers (``heartbeat``), which release again a few
seconds later: that catches a job its last command, still in flight when it died, took
after this release. Without that (no peer), such a job waits for its lock to expire.
"""

from __future__ import annotations

from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.config import Settings


async def release_dead_worker(redis: Redis, settings: Settings, name: str) -> list[str]:
    """Put back the jobs the dead worker ``name`` still locks on the queues of ``settings``;
    answers their ids."""
    released: list[str] = []
    for queue in settings.queue_weights:
        bull = BullQueue(redis, queue, settings.prefix)
        jobs = await bull.release_worker(
            name, max_stalled_count=settings.max_stalled_count, seen_beat_ms=None, forget=False
        )
        released += jobs or []
    return released
