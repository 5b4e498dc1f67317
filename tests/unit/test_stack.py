"""The stack trace stored on a failed job: Python's own text, minus the ^^^^ marker lines."""

from __future__ import annotations

import traceback

from conveyor.worker.stack import format_stack


def _inner() -> None:
    raise KeyError("missing")


def _middle() -> None:
    try:
        _inner()
    except KeyError as exc:
        raise RuntimeError("wrapped") from exc


def _outer() -> None:
    try:
        _middle()
    except RuntimeError:
        raise ValueError("while handling")  # noqa: B904 (the implicit context is the point)


def _without_markers(text: str) -> str:
    return "".join(
        line
        for line in text.splitlines(keepends=True)
        if not (line.strip() and set(line.strip()) <= set("^~"))
    )


def test_same_text_as_the_traceback_module_for_a_chain_of_three() -> None:
    try:
        _outer()
    except ValueError as exc:
        ours = format_stack(exc)
        theirs = _without_markers("".join(traceback.format_exception(exc)))
    assert ours == theirs
    assert 'raise KeyError("missing")' in ours  # source lines are there
    assert ours.count("Traceback (most recent call last):") == 3


def test_suppressed_context_is_left_out() -> None:
    try:
        try:
            _inner()
        except KeyError:
            raise ValueError("clean") from None
    except ValueError as exc:
        ours = format_stack(exc)
        theirs = _without_markers("".join(traceback.format_exception(exc)))
    assert ours == theirs
    assert "KeyError" not in ours


def test_an_exception_never_raised_has_only_its_last_line() -> None:
    assert format_stack(ValueError("never raised")) == "ValueError: never raised\n"


def test_an_exception_group_keeps_its_sub_exceptions() -> None:
    try:
        raise ExceptionGroup("unhandled errors in a TaskGroup", [KeyError("the real cause")])
    except ExceptionGroup as exc:
        text = format_stack(exc)
    assert "the real cause" in text
    assert "KeyError" in text
