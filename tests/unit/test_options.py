"""Job options are checked before anything touches Redis."""

from __future__ import annotations

import uuid

import pytest

from conveyor.client import build_options, new_job_id
from conveyor.errors import JobOptionsError
from conveyor.policy import RetryPolicy

DEFAULT = RetryPolicy.from_retries(5, "exponential", 1000)


def test_defaults_are_written_into_the_job() -> None:
    job_id, opts = build_options(None, DEFAULT)
    uuid.UUID(job_id)
    assert opts == {
        "attempts": 6,
        "backoff": {"type": "exponential", "delay": 1000},
        "jobId": job_id,
    }


def test_no_options_give_what_the_checked_path_gives() -> None:
    """The shortcut for a job without options answers what checking an option that changes
    nothing (``delay: 0``) answers."""
    policy = RetryPolicy.from_retries(2, "fixed", 250)
    job_id, opts = build_options({}, policy)
    _, checked = build_options({"delay": 0}, policy)
    assert opts == {**checked, "jobId": job_id}
    assert list(opts) == list(checked)  # the same order, so the same msgpack bytes


def test_new_job_ids_are_version_4_uuids() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert str(parsed) == job_id
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)


def test_caller_options_win() -> None:
    job_id, opts = build_options(
        {"attempts": 2, "backoff": 10, "delay": 500, "priority": 3, "jobId": "order-7"}, DEFAULT
    )
    assert job_id == "order-7"
    assert opts["attempts"] == 2
    assert opts["backoff"] == {"type": "fixed", "delay": 10}
    assert opts["delay"] == 500
    assert opts["priority"] == 3


@pytest.mark.parametrize(
    "options",
    [
        {"color": "red"},
        {"delay": -1},
        {"delay": 1.5},
        {"priority": 3_000_000},
        {"attempts": 0},
        {"attempts": True},
        {"jobId": "a:b"},
        {"jobId": "123"},
        {"jobId": ""},
        {"lifo": "yes"},
        {"removeOnComplete": "always"},
        {"removeOnComplete": 2**70},
        {"removeOnFail": {"age": 2**64}},
        {"removeOnFail": {"count": -1}},
        {"removeOnFail": {}},
        {"delay": 2**63},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(JobOptionsError):
        build_options(options, DEFAULT)
