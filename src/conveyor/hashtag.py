"""Redis Cluster hash tags: which part of a key picks its slot, and whether every key of a queue
shares one. Pure, no I/O.

A Redis Cluster hashes a key to one of 16,384 slots by its *hash tag*: the text between the
first ``{`` and the first ``}`` after it, when that is not empty; otherwise the whole key. A Lua
script or a MULTI may only touch keys of one slot, and BullMQ's scripts touch many keys of a
queue at once, so in a cluster all of a queue's keys (BullMQ's ``{prefix}:{queue}:*`` and
Conveyor's own, ``conveyor.keys``) must carry the same tag: the queue's name or the prefix
holds one, e.g. ``CONVEYOR_PREFIX={orders}`` or ``CONVEYOR_QUEUE={orders}``, as Node.js
BullMQ asks of its users for the same reason.
"""

from __future__ import annotations

from redis.crc import key_slot

from conveyor.errors import ConfigurationError

#: Slots of a Redis Cluster.
SLOTS = 16384


def key_hash_tag(key: str) -> str | None:
    """The hash tag of ``key`` by Redis's rule, or None when the whole key is hashed."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end < 0 or end == start + 1:
        return None
    return key[start + 1 : end]


def queue_hash_tag(prefix: str, queue: str) -> str | None:
    """The tag every key of the queue shares (all start ``{prefix}:{queue}:``), or None when
    the keys would spread over slots: no ``{…}`` there, an empty one, or one left open."""
    base = f"{prefix}:{queue}:"
    tag = key_hash_tag(base)
    if tag is None:
        return None
    start = base.find("{")
    # The tag must close inside the base: else it would depend on what follows (the job id).
    return tag if base.find("}", start + 1) < len(base) else None


def queue_route_key(prefix: str, queue: str) -> str:
    """A key in the queue's slot (its key base), to route a connection by."""
    return f"{prefix}:{queue}:"


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (CRC16 of its hash tag or of itself, mod 16384)."""
    return int(key_slot(key.encode()))


def no_hash_tag(prefix: str, queue: str) -> str:
    """What to say of a queue without a hash tag in a cluster."""
    return (
        f"the queue {queue!r} under prefix {prefix!r} has no hash tag: in a Redis Cluster "
        "all of a queue's keys must hash to one slot, so put a tag in the queue's name or "
        f"the prefix, e.g. CONVEYOR_QUEUE={{{queue}}} or CONVEYOR_PREFIX={{{prefix}}} "
        "(Node.js BullMQ needs the same name and prefix)"
    )


def require_hash_tag(prefix: str, queue: str) -> str:
    """The queue's hash tag; ConfigurationError (one readable line) when it has none."""
    tag = queue_hash_tag(prefix, queue)
    if tag is None:
        raise ConfigurationError(no_hash_tag(prefix, queue))
    return tag
