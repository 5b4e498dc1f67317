"""The wait after failures in a row (Redis retries, restarts), by a table."""

from __future__ import annotations

import pytest

from conveyor.backoff import capped_backoff


@pytest.mark.parametrize(
    ("failures", "base", "cap", "wait"),
    [
        (0, 0.1, 2.0, 0.1),
        (1, 0.1, 2.0, 0.1),
        (2, 0.1, 2.0, 0.2),
        (3, 0.1, 2.0, 0.4),
        (5, 0.1, 2.0, 1.6),
        (6, 0.1, 2.0, 2.0),
        (10_000, 0.1, 2.0, 2.0),  # a long outage: capped, never an OverflowError
        (1, 0.5, 30.0, 0.5),
        (7, 0.5, 30.0, 30.0),
        (1, 5.0, 1.0, 1.0),  # the cap wins even over the base
        (4, 0.05, 1.0, 0.4),
    ],
)
def test_capped_backoff(failures: int, base: float, cap: float, wait: float) -> None:
    assert capped_backoff(failures, base, cap) == pytest.approx(wait)
