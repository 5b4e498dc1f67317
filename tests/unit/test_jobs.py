"""Backoff arithmetic and retry policies, by tables."""

from __future__ import annotations

import pytest

from conveyor.errors import JobOptionsError
from conveyor.jobs import (
    MAX_BACKOFF_MS,
    RetryPolicy,
    backoff_delay_ms,
    failure_record_key,
    policy_from_job_options,
    should_retry,
)

EXP_1S = RetryPolicy.from_retries(5, "exponential", 1000)


@pytest.mark.parametrize(
    ("attempts_made", "expected"),
    [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (5, 16000)],
)
def test_exponential_backoff_doubles(attempts_made: int, expected: int) -> None:
    assert backoff_delay_ms(attempts_made, EXP_1S) == expected


def test_fixed_backoff_is_constant() -> None:
    policy = RetryPolicy(attempts=4, backoff_type="fixed", backoff_delay_ms=250)
    assert [backoff_delay_ms(n, policy) for n in (1, 2, 3)] == [250, 250, 250]


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_delay_ms(0, EXP_1S)


@pytest.mark.parametrize(
    ("attempts_made", "unrecoverable", "expected"),
    [(1, False, True), (5, False, True), (6, False, False), (1, True, False)],
)
def test_should_retry_allows_five_retries(
    attempts_made: int, unrecoverable: bool, expected: bool
) -> None:
    assert EXP_1S.attempts == 6
    assert should_retry(attempts_made, EXP_1S, unrecoverable=unrecoverable) is expected


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({}, RetryPolicy(6, "exponential", 1000)),
        ({"attempts": 3}, RetryPolicy(3, "exponential", 1000)),
        ({"attempts": 0}, RetryPolicy(6, "exponential", 1000)),
        ({"backoff": 500}, RetryPolicy(6, "fixed", 500)),
        ({"backoff": {"type": "fixed", "delay": 10}}, RetryPolicy(6, "fixed", 10)),
        ({"attempts": 2, "backoff": {"type": "exponential"}}, RetryPolicy(2, "exponential", 1000)),
    ],
)
def test_job_options_take_precedence_over_defaults(
    opts: dict[str, object], expected: RetryPolicy
) -> None:
    assert policy_from_job_options(opts, EXP_1S) == expected


@pytest.mark.parametrize(
    "opts",
    [
        {"backoff": {"type": "custom"}},
        {"backoff": "soon"},
        {"backoff": True},
        {"attempts": "3"},
        {"backoff": {"type": "fixed", "delay": "1s"}},
        {"backoff": float("nan")},
        {"backoff": {"type": "fixed", "delay": float("inf")}},
        {"backoff": 2**70},
    ],
)
def test_bad_job_options_are_refused(opts: dict[str, object]) -> None:
    with pytest.raises(JobOptionsError):
        policy_from_job_options(opts, EXP_1S)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(JobOptionsError):
        RetryPolicy(attempts=0)
    with pytest.raises(JobOptionsError):
        RetryPolicy(attempts=1, backoff_delay_ms=-1)


def test_to_job_options_is_bullmq_shaped() -> None:
    assert EXP_1S.to_job_options() == {
        "attempts": 6,
        "backoff": {"type": "exponential", "delay": 1000},
    }


@pytest.mark.parametrize(
    ("job_id", "key"),
    [
        ("3f2c9a4e-8d1b-4c55-9e0a-1b2c3d4e5f60", "failedJobs:3f2c9a4e-8d1b-4c55-9e0a-1b2c3d4e5f60"),
        ("order-42", "failedJobs:order-42"),
        ("1", "failedJobs:taskQueue:1"),  # BullMQ counter ids repeat across queues
        ("12345", "failedJobs:taskQueue:12345"),
        ("-1", "failedJobs:-1"),
        ("\u0661", "failedJobs:\u0661"),  # an Arabic-Indic digit is not a counter id
        ("repeat:abc:1700000000000", "failedJobs:repeat:abc:1700000000000"),
    ],
)
def test_failure_record_key_is_the_seed_key_unless_the_id_is_a_counter(
    job_id: str, key: str
) -> None:
    assert failure_record_key("failedJobs", job_id, queue="taskQueue") == key


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=1000, backoff_type="exponential", backoff_delay_ms=1000)
    assert backoff_delay_ms(999, policy) == MAX_BACKOFF_MS
