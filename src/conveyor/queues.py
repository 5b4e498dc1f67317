"""Several queues in one deployment: the ``CONVEYOR_QUEUES`` list, its weights, and how a
worker process shares its concurrency among them. Pure values, no I/O.

``CONVEYOR_QUEUES=orders:3,emails:1`` (a weight is optional, 1 by default) makes one worker
process serve both queues; with ``--concurrency 8``, while both have work, they run 6 and 2
jobs at once. A queue with nothing to do leaves its slots to the others
(``conveyor.worker.slots``): the weights only decide who gets a freed slot.
"""

from __future__ import annotations

#: The most queues one process serves (each costs two connections and a few tasks).
MAX_QUEUES = 64
#: The largest weight of one queue.
MAX_WEIGHT = 1000


def parse_queue_weights(value: str) -> dict[str, int]:
    """``"a:3, b"`` -> ``{"a": 3, "b": 1}``; ValueError naming what is wrong."""
    weights: dict[str, int] = {}
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, weight = entry, 1
        head, sep, tail = entry.rpartition(":")
        if sep:
            if not (tail.isascii() and tail.isdigit()):
                raise ValueError(f"{entry!r}: a queue's weight is a whole number (name:weight)")
            name, weight = head.strip(), int(tail)
        add_queue(weights, name, weight)
    return weights


def add_queue(weights: dict[str, int], name: str, weight: int) -> None:
    """Add one queue to ``weights``, checking its name and weight."""
    if not name:
        raise ValueError("a queue's name is empty")
    if ":" in name or "," in name:
        raise ValueError(f"{name!r}: a queue's name cannot hold ':' or ','")
    if not 1 <= weight <= MAX_WEIGHT:
        raise ValueError(f"{name!r}: a queue's weight is from 1 to {MAX_WEIGHT}")
    if name in weights:
        raise ValueError(f"{name!r} is listed twice")
    if len(weights) >= MAX_QUEUES:
        raise ValueError(f"at most {MAX_QUEUES} queues")
    weights[name] = weight
