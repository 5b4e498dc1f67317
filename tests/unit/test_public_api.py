"""The public API is explicit: conveyor.__all__ is sorted and every name resolves."""

from __future__ import annotations

import typing

import conveyor


def test_all_is_sorted_and_complete() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None, name


def test_everything_public_is_listed() -> None:
    public = {
        name
        for name, value in vars(conveyor).items()
        if not name.startswith("_") and not isinstance(value, type(conveyor))
    }
    assert public == set(conveyor.__all__) - {"__version__"}


def test_public_calls_answer_the_public_read_model() -> None:
    """What QueueClient answers about a job is conveyor.JobRecord, not a private type."""
    assert "JobRecord" in conveyor.__all__
    assert typing.get_type_hints(conveyor.JobView)["info"] is conveyor.JobRecord
    hints = typing.get_type_hints(conveyor.QueueClient.find_job)
    assert hints["return"] == conveyor.JobRecord | None
    hints = typing.get_type_hints(conveyor.QueueClient.list_jobs)
    assert hints["return"] == list[conveyor.JobRecord]


def test_a_cancel_answers_public_types() -> None:
    hints = typing.get_type_hints(conveyor.QueueClient.cancel)
    assert hints["return"] is conveyor.CancelResult
    assert typing.get_type_hints(conveyor.CancelResult)["outcome"] is conveyor.CancelOutcome
