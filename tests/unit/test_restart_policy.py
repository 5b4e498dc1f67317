"""The one restart rule of both supervisors (``conveyor up``, ``worker --processes``)."""

from __future__ import annotations

import pytest

from conveyor.services.restarts import Restart, RestartPolicy

POLICY = RestartPolicy(stable_after_s=10.0)


@pytest.mark.parametrize(
    ("crashes_before", "ran_s", "expected"),
    [
        (0, 0.1, Restart(1, 0.5)),  # a first crash
        (1, 0.1, Restart(2, 1.0)),  # doubling with each crash in a row
        (2, 9.9, Restart(3, 2.0)),
        (5, 0.1, Restart(6, 16.0)),
        (6, 0.1, Restart(7, 30.0)),  # capped
        (49, 0.1, Restart(50, 30.0)),
        (5000, 0.1, Restart(5001, 30.0)),  # a crash loop of days: still the cap, no overflow
        (6, 10.0, Restart(1, 0.5)),  # it had run long enough: the count starts again
        (6, 3600.0, Restart(1, 0.5)),
        (0, 10.0, Restart(1, 0.5)),
    ],
)
def test_restart_after_exit(crashes_before: int, ran_s: float, expected: Restart) -> None:
    assert POLICY.after_exit(crashes_before, ran_s) == expected


def test_base_cap_and_stable_time_are_the_policys() -> None:
    policy = RestartPolicy(stable_after_s=60.0, base_s=1.0, cap_s=3.0)
    assert policy.after_exit(0, 59.0) == Restart(1, 1.0)
    assert policy.after_exit(1, 59.0) == Restart(2, 2.0)
    assert policy.after_exit(2, 59.0) == Restart(3, 3.0)
    assert policy.after_exit(3, 60.0) == Restart(1, 1.0)
