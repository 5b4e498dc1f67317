"""The job rules (conveyor.policy): the precedence chain and the option limits, by tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from conveyor.client import build_options
from conveyor.config import Settings
from conveyor.errors import JobOptionsError, TaskError
from conveyor.policy import (
    DEFAULT_POLICY,
    MAX_BACKOFF_MS,
    BackoffType,
    RetryPolicy,
    effective_policy,
    max_attempts,
)
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry


@dataclass(frozen=True)
class TaskRules:
    retries: int | None = None
    backoff_type: BackoffType | None = None
    backoff_delay_ms: int | None = None


SETTINGS = RetryPolicy.from_retries(5, "exponential", 1000)
TASK = TaskRules(retries=2, backoff_type="fixed", backoff_delay_ms=300)
TWO_DAYS_MS = 2 * 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("options", "task", "expected"),
    [
        # Nothing said: the settings' policy.
        ({}, None, RetryPolicy(6, "exponential", 1000)),
        ({}, TaskRules(), RetryPolicy(6, "exponential", 1000)),
        # Node.js writes attempts 0 for "not given": same as absent.
        ({"attempts": 0}, None, RetryPolicy(6, "exponential", 1000)),
        # The task over the settings, field by field.
        ({}, TASK, RetryPolicy(3, "fixed", 300)),
        ({}, TaskRules(retries=0), RetryPolicy(1, "exponential", 1000)),
        ({}, TaskRules(backoff_delay_ms=50), RetryPolicy(6, "exponential", 50)),
        # The job over the task, field by field.
        ({"attempts": 9}, TASK, RetryPolicy(9, "fixed", 300)),
        ({"backoff": 70}, TASK, RetryPolicy(3, "fixed", 70)),
        ({"backoff": {"type": "exponential"}}, TASK, RetryPolicy(3, "exponential", 300)),
        (
            {"attempts": 4, "backoff": {"type": "exponential", "delay": 10}},
            TASK,
            RetryPolicy(4, "exponential", 10),
        ),
        # Options a stored job may carry but Conveyor cannot honour fall back, backoff first.
        ({"attempts": 4, "backoff": {"type": "jitter"}}, TASK, RetryPolicy(4, "fixed", 300)),
        ({"attempts": 2, "backoff": TWO_DAYS_MS * 30}, None, RetryPolicy(2, "exponential", 1000)),
        ({"attempts": "4"}, TASK, RetryPolicy(3, "fixed", 300)),
        ({"attempts": True}, None, RetryPolicy(6, "exponential", 1000)),
        ({"attempts": -1}, None, RetryPolicy(6, "exponential", 1000)),
    ],
)
def test_precedence_job_then_task_then_settings(
    options: dict[str, Any], task: TaskRules | None, expected: RetryPolicy
) -> None:
    policy, _ = effective_policy(options, SETTINGS, task)
    assert policy == expected
    # The quick count the worker logs and the API and monitor show agrees with the policy.
    assert max_attempts(options, SETTINGS, task) == expected.attempts


def test_a_problem_is_reported_not_raised() -> None:
    _, problem = effective_policy({"backoff": {"type": "jitter"}}, SETTINGS)
    assert isinstance(problem, JobOptionsError)
    assert effective_policy({"attempts": 3}, SETTINGS)[1] is None


def test_settings_are_the_last_step() -> None:
    assert Settings(retries=2, backoff_type="fixed", backoff_delay_ms=5).retry_policy == (
        RetryPolicy(3, "fixed", 5)
    )
    assert Settings().retry_policy == DEFAULT_POLICY == RetryPolicy(6, "exponential", 1000)


@pytest.mark.parametrize("form", ["number", "object"])
def test_one_backoff_limit_whichever_way_it_is_written(form: str) -> None:
    def backoff(ms: int) -> Any:
        return ms if form == "number" else {"type": "fixed", "delay": ms}

    _, opts = build_options({"backoff": backoff(TWO_DAYS_MS)}, SETTINGS)
    assert opts["backoff"] == {"type": "fixed", "delay": TWO_DAYS_MS}
    _, opts = build_options({"backoff": backoff(MAX_BACKOFF_MS)}, SETTINGS)
    assert opts["backoff"]["delay"] == MAX_BACKOFF_MS
    with pytest.raises(JobOptionsError, match="backoff delay"):
        build_options({"backoff": backoff(MAX_BACKOFF_MS + 1)}, SETTINGS)
    with pytest.raises(JobOptionsError):
        build_options({"backoff": backoff(-1)}, SETTINGS)


@pytest.mark.parametrize(
    "rules",
    [
        {"retries": -1},
        {"retries": 1000},
        {"backoff_delay_ms": -1},
        {"backoff_delay_ms": MAX_BACKOFF_MS + 1},
    ],
)
def test_a_task_beyond_the_limits_is_refused_at_registration(rules: dict[str, Any]) -> None:
    registry = TaskRegistry()
    with pytest.raises(TaskError, match="'late'"):

        @registry.task("late", **rules)
        async def late(payload: EmptyPayload, ctx: JobContext) -> None:
            return None
