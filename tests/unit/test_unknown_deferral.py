"""The put-back schedule of jobs whose task the worker does not know (a pure decision)."""

from __future__ import annotations

import pytest

from conveyor.worker.unknown import COUNT_FIELD, SINCE_FIELD, Deferral, next_deferral

NOW = 1_000_000_000
C, S = COUNT_FIELD, SINCE_FIELD
AGO = str(NOW - 1000)


@pytest.mark.parametrize(
    ("raw", "timeout_s", "expected"),
    [
        ({}, 60, Deferral(1_000, 1, {C: "1", S: str(NOW)})),  # the first: since now
        ({C: "1", S: AGO}, 60, Deferral(2_000, 2, {C: "2"})),  # doubling
        ({C: "6", S: AGO}, 60, Deferral(60_000, 7, {C: "7"})),  # capped at a minute
        ({C: "900", S: AGO}, 60, Deferral(60_000, 901, {C: "901"})),
        ({C: "3", S: str(NOW - 60_000)}, 60, None),  # waited the limit: fails for good
        ({C: "x", S: "y"}, 60, Deferral(1_000, 1, {C: "1", S: str(NOW)})),  # garbage: anew
    ],
)  # fmt: skip
def test_next_deferral(raw: dict[str, str], timeout_s: float, expected: Deferral | None) -> None:
    assert next_deferral(raw, NOW, timeout_s) == expected
