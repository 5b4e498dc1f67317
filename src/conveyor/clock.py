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
