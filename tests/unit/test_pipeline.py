"""The NOSCRIPT rule both per-tick batchers follow: only the callers whose commands met
NOSCRIPT are sent again, once, and their new replies take the old ones' place."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import NoScriptError, ResponseError

from conveyor.pipeline import met_noscript, resend_noscript

LOST = NoScriptError("NOSCRIPT No matching script")


@pytest.mark.parametrize(
    ("replies", "met"),
    [
        ([], False),
        ([1, "ok", None], False),
        ([ResponseError("ERR wrong type")], False),
        ([1, LOST], True),
        ([LOST, ResponseError("ERR")], True),
    ],
)
def test_met_noscript(replies: list[Any], met: bool) -> None:
    assert met_noscript(replies) is met


@pytest.mark.parametrize(
    ("spans", "resent", "after"),
    [
        ([[1], [2]], [], [[1], [2]]),
        ([[1], [LOST], [3, LOST]], [1, 2], [[1], ["again 1"], ["again 2"]]),
        ([[LOST]], [0], [["again 0"]]),
    ],
)
async def test_resend_noscript_sends_only_the_lost_spans_again(
    spans: list[list[Any]], resent: list[int], after: list[list[Any]]
) -> None:
    calls: list[list[int]] = []

    async def resend(lost: list[int]) -> list[list[Any]]:
        calls.append(lost)
        return [[f"again {index}"] for index in lost]

    assert await resend_noscript(spans, resend) == after
    assert calls == ([resent] if resent else [])
