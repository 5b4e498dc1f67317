"""The wall clock in milliseconds since the epoch: BullMQ's unit of time, and Conveyor's.

Timestamps in job hashes, the delayed set's scores, failure times and the cleanup schedule all
use it, so they compare with what Node.js BullMQ writes (``Date.now()``). Decisions take
``now_ms`` as an argument (see ``conveyor.maintenance.retention``); only the edges read the clock.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, rounded."""
    return round(time.time() * 1000)


class IsoStamps:
    """ISO 8601 UTC times with milliseconds (``2026-11-30T10:00:00.123Z``, as failure records
    keep them), the date and time of day formatted once per second: a worker failing
    thousands of jobs a second asks for many in the same second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def at(self, ms: int) -> str:
        """``ms`` (since the epoch) in ISO 8601 UTC."""
        second, millis = divmod(ms, 1000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{millis:03d}Z"
