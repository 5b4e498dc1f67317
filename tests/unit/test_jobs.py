"""Backoff arithmetic and retry policies, by tables."""

from __future__ import annotations

import pytest

from conveyor._bullmq.record import dumps, dumps_texts
from conveyor.errors import JobOptionsError
from conveyor.keys import FailureKeys
from conveyor.policy import (
    MAX_BACKOFF_MS,
    RetryPolicy,
    backoff_delay_ms,
    policy_from_job_options,
    should_retry,
)

IDX = "conveyor:failed-index"
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
    ("prefix", "queue", "job_id", "record", "index"),
    [
        # The seed's deployment: exactly failedJobs:{jobId}, counter ids included.
        ("bull", "taskQueue", "42", "failedJobs:42", "failedJobs-index"),
        ("bull", "taskQueue", "order-42", "failedJobs:order-42", "failedJobs-index"),
        ("bull", "taskQueue", "3f2c9a4e", "failedJobs:3f2c9a4e", "failedJobs-index"),
        # Any other queue (or prefix): inside its own key space, its own index.
        ("bull", "emails", "42", "bull:emails:conveyor:failed:42", f"bull:emails:{IDX}"),
        ("bull", "emails", "o-42", "bull:emails:conveyor:failed:o-42", f"bull:emails:{IDX}"),
        ("acme", "taskQueue", "42", "acme:taskQueue:conveyor:failed:42", f"acme:taskQueue:{IDX}"),
        ("bull", "taskqueue", "7", "bull:taskqueue:conveyor:failed:7", f"bull:taskqueue:{IDX}"),
    ],
)  # fmt: skip
def test_failure_keys_seed_queue_keeps_the_seed_key_others_their_own_space(
    prefix: str, queue: str, job_id: str, record: str, index: str
) -> None:
    keys = FailureKeys(prefix, queue)
    assert keys.record(job_id) == record
    assert keys.index == index


def test_the_same_id_on_two_queues_never_shares_a_record_key() -> None:
    queues = [FailureKeys("bull", q) for q in ("taskQueue", "emails", "reports")]
    queues.append(FailureKeys("other", "taskQueue"))
    for job_id in ("1", "order-42", "3f2c9a4e"):
        assert len({k.record(job_id) for k in queues}) == len(queues)


def test_the_failed_key_prefix_names_the_seed_part() -> None:
    keys = FailureKeys("bull", "taskQueue", "deadJobs")
    assert (keys.record("42"), keys.index) == ("deadJobs:42", "deadJobs-index")


@pytest.mark.parametrize(
    ("job_id", "key"),
    [
        ("3f2c9a4e-8d1b-4c55-9e0a-1b2c3d4e5f60", "failedJobs:3f2c9a4e-8d1b-4c55-9e0a-1b2c3d4e5f60"),
        ("order-42", "failedJobs:order-42"),
        ("1", "failedJobs:emails:1"),
        ("\u0661", "failedJobs:\u0661"),  # an Arabic-Indic digit is not a counter id
    ],
)
def test_legacy_record_is_where_earlier_versions_wrote(job_id: str, key: str) -> None:
    keys = FailureKeys("bull", "emails")
    assert keys.legacy_record(job_id) == key
    assert keys.legacy_index == "failedJobs-index"


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=1000, backoff_type="exponential", backoff_delay_ms=1000)
    assert backoff_delay_ms(999, policy) == MAX_BACKOFF_MS


@pytest.mark.parametrize(
    "texts",
    [
        [],
        ["Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: 'v'\n"],
        ["a\\b", 'q"q', "\t\r\b\f\x00\x1f\x7f", "é ü 中 😀", "\u2028\u2029", "lone \udc80", ""],
    ],
)
def test_stack_traces_are_written_as_json_dumps_writes_them(texts: list[str]) -> None:
    assert dumps_texts(texts) == dumps(texts)
