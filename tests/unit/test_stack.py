"""The stack trace stored on a failed job: Python's own text, minus the ^^^^ marker lines."""

from __future__ import annotations

import traceback

import pytest

from conveyor.worker.stack import FrameTexts, exception_line, format_stack


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


def test_entries_kept_from_earlier_failures_give_the_same_text() -> None:
    class Small(FrameTexts):
        LIMIT = 2  # emptied again and again on the way

    for frames in (FrameTexts(), Small()):
        texts = []
        for _ in range(3):
            try:
                _outer()
            except ValueError as exc:
                texts.append(format_stack(exc, frames))
                fresh = format_stack(exc)
        assert texts == [fresh] * 3
        assert 'raise KeyError("missing")' in fresh


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


class _StrFails(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt  # even a BaseException from __str__


class _Outer:
    class Nested(KeyError):
        pass


class _NoModule(Exception):
    pass


_NoModule.__module__ = None  # type: ignore[assignment]


def _with_note() -> ValueError:
    exc = ValueError("noted")
    exc.add_note("first\nsecond")
    return exc


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("bench: fails"),
        ValueError(""),
        KeyError("k"),
        _StrFails(),
        _Outer.Nested("z"),
        _NoModule("m"),
        _with_note(),
        SyntaxError("bad", ("f.py", 1, 2, "x y", 1, 3)),
        OSError(2, "nope"),
        BaseException(),
        SystemExit(3),
        RuntimeError("two\nlines"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        ExceptionGroup("g", [ValueError(1)]),
    ],
    ids=repr,
)
def test_the_last_line_is_the_traceback_modules(error: BaseException) -> None:
    assert exception_line(error) == "".join(traceback.format_exception_only(type(error), error))
