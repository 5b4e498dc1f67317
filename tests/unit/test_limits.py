"""The rate-limit notation of settings and tasks, and the settings that carry limits."""

from __future__ import annotations

import pytest

from conveyor.config import load_settings
from conveyor.errors import ConfigurationError, LimitError
from conveyor.limits import QueueLimits, RateLimit, parse_rate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/s", RateLimit(100, 1000)),
        (" 5 / 1500ms ", RateLimit(5, 1500)),
        ("600/m", RateLimit(600, 60_000)),
        ("10/2s", RateLimit(10, 2000)),
        ("1/h", RateLimit(1, 3_600_000)),
        ("7/S", RateLimit(7, 1000)),
    ],
)
def test_parse_rate(text: str, expected: RateLimit) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text",
    ["100", "0/s", "-1/s", "1.5/s", "5/0s", "5/fortnight", "x/s", "5/s/s", "", "5/-1s",
     "1000000001/s", "1/169h"],
)  # fmt: skip
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(LimitError):
        parse_rate(text)


def test_rate_limit_prints_back_in_its_own_notation() -> None:
    assert [str(parse_rate(t)) for t in ("100/s", "5/1500ms", "600/m", "2/h")] == [
        "100/s",
        "5/1500ms",
        "600/m",
        "2/h",
    ]


def test_bounds_of_values() -> None:
    with pytest.raises(LimitError):
        QueueLimits(concurrency=0)
    with pytest.raises(LimitError):
        RateLimit(True, 1000)


def test_limit_settings_say_which_limits_to_write() -> None:
    assert load_settings().queue_limits == (QueueLimits(), frozenset())
    settings = load_settings(rate_limit="50/s", queue_concurrency="none")
    assert settings.queue_limits == (
        QueueLimits(RateLimit(50, 1000), None),
        frozenset({"rate", "concurrency"}),
    )
    assert load_settings(worker_rate_limit="5/s").worker_limiter == RateLimit(5, 1000)


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("rate_limit", "fast", "CONVEYOR_RATE_LIMIT"),
        ("queue_concurrency", "0", "CONVEYOR_QUEUE_CONCURRENCY"),
        ("queue_concurrency", "two", "CONVEYOR_QUEUE_CONCURRENCY"),
        ("worker_rate_limit", "none", "CONVEYOR_WORKER_RATE_LIMIT"),
    ],
)
def test_a_bad_limit_setting_is_one_readable_error(field: str, value: str, variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable) as caught:
        load_settings(**{field: value})
    assert "\n" not in str(caught.value)
