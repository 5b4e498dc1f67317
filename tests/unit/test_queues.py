"""CONVEYOR_QUEUES: parsing, weights, and the slot pool's sharing rule (pure, no Redis)."""

from __future__ import annotations

import asyncio

import pytest

from conveyor import ConfigurationError
from conveyor.config import load_settings
from conveyor.queues import parse_queue_weights
from conveyor.worker.slots import SlotPool


def test_parse_weights() -> None:
    assert parse_queue_weights("a:3, b ,{c}:1") == {"a": 3, "b": 1, "{c}": 1}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a:x", "whole number"),
        ("a:0", "from 1 to 1000"),
        ("a,a", "listed twice"),
        (":2", "empty"),
    ],
)
def test_bad_queue_lists_are_one_readable_error(value: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=f"CONVEYOR_QUEUES: .*{problem}"):
        load_settings(queues=value)


def test_the_first_listed_queue_is_the_default_and_queue_must_be_listed() -> None:
    assert load_settings(queues="a:3,b").queue == "a"
    assert load_settings(queues="a:3,b", queue="b").queue_weights == {"a": 3, "b": 1}
    assert load_settings(queue="solo").queue_weights == {"solo": 1}
    with pytest.raises(ConfigurationError, match="CONVEYOR_QUEUE 'c' is not one of them"):
        load_settings(queues="a,b", queue="c")


async def test_pool_gives_a_freed_slot_to_the_neediest_waiter() -> None:
    pool = SlotPool(4, {"a": 3, "b": 1})
    for queue in ("a", "a", "b", "b"):  # first come, first served while slots are free
        assert await pool.take(queue)
    a_waits = asyncio.ensure_future(pool.take("a"))
    b_waits = asyncio.ensure_future(pool.take("b"))
    await asyncio.sleep(0)
    assert not a_waits.done()
    assert not b_waits.done()
    # b is above its share (2 of weight 1) and a below (2 of 3): b yields, a keeps chaining.
    assert pool.should_yield("b")
    assert not pool.should_yield("a")
    pool.give_back("b")
    await asyncio.sleep(0)
    assert a_waits.done()
    assert not b_waits.done()
    assert (pool.share("a"), pool.share("b"), pool.free) == (3, 1, 0)
    b_waits.cancel()  # a cancelled wait takes nothing
    await asyncio.sleep(0)
    pool.give_back("a")
    assert (pool.share("a"), pool.free) == (2, 1)
    assert await pool.take("b")  # free slot, nobody waiting: at once
    assert not pool.should_yield("a")
