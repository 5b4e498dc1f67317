"""Describing what a handler raised, for the job hash and the failure record: the error line
and the traceback, made safe for Redis whatever the exception does."""

from __future__ import annotations

import linecache
import traceback
from types import CodeType, FrameType

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


class FrameTexts:
    """Traceback entries already formatted (the ``File …, line …, in …`` line and its source
    line), per code object and line: a handler that fails tends to fail the same way many
    times, and a worker keeps one of these. Bounded: emptied when full."""

    #: Entries kept at most.
    LIMIT = 4096

    def __init__(self) -> None:
        self._texts: dict[tuple[CodeType, int], str] = {}

    def entry(self, frame: FrameType, lineno: int) -> str:
        key = (frame.f_code, lineno)
        text = self._texts.get(key)
        if text is None:
            if len(self._texts) >= self.LIMIT:
                self._texts.clear()
            text = self._texts[key] = _entry(frame, lineno)
        return text


def _entry(frame: FrameType, lineno: int) -> str:
    code = frame.f_code
    text = f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n'
    line = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
    return f"{text}    {line}\n" if line else text


def format_stack(exc: BaseException, frames: FrameTexts | None = None) -> str:
    """The traceback as Python prints it (chained exceptions included), without the ``^^^^``
    marker lines; ``frames``: entries formatted before, to reuse.

    ``traceback.format_exception`` finds those markers by walking each frame's code positions
    and compiling its source line, and stats every source file on each call: most of the cost
    of a failed attempt. Here source lines come from linecache, read once per file.
    """
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        if isinstance(current, BaseExceptionGroup):  # its sub-exceptions: Python's own text
            return "".join(traceback.format_exception(exc))
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts: list[str] = []
    for error, link_to_next in reversed(chain):
        tb = error.__traceback__
        if tb is not None:
            parts.append("Traceback (most recent call last):\n")
        while tb is not None:
            if frames is None:
                parts.append(_entry(tb.tb_frame, tb.tb_lineno))
            else:
                parts.append(frames.entry(tb.tb_frame, tb.tb_lineno))
            tb = tb.tb_next
        parts.append(exception_line(error))
        parts.append(link_to_next)
    return "".join(parts)


def exception_line(error: BaseException) -> str:
    """``"".join(traceback.format_exception_only(type(error), error))``: the last line of a
    traceback, ``module.Class: message``.

    The common case (no ``__notes__``, not a SyntaxError, a ``__str__`` that works) is
    built here as traceback builds it; traceback's own function first makes a whole
    TracebackException, half the cost of formatting a short stack. Anything else goes to it.
    """
    kind = type(error)
    if issubclass(kind, SyntaxError) or getattr(error, "__notes__", None) is not None:
        return "".join(traceback.format_exception_only(kind, error))
    try:
        text = str(error)
    except BaseException:  # traceback's own placeholder for a failing __str__
        return "".join(traceback.format_exception_only(kind, error))
    name = kind.__qualname__
    module = kind.__module__
    if module not in ("__main__", "builtins"):
        name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
    return f"{name}: {text}\n" if text else f"{name}\n"


def utf8(text: str) -> str:
    """``text`` as Redis can store it: a lone surrogate (from an undecodable file name, say)
    becomes a backslash escape instead of failing the write that records the failure."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def describe(exc: BaseException) -> str:
    """``Class: message``; just the class name when the message is empty or its ``__str__``
    raises (a hostile exception must still leave a recorded error, not a locked job)."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # any failure of a handler's __str__
        return name
    return f"{name}: {text}" if text else name


def stack_text(exc: BaseException, frames: FrameTexts | None = None) -> str:
    """``format_stack``, or the class name if even traceback formatting fails on it."""
    try:
        return format_stack(exc, frames)
    except BaseException:  # a hostile exception object
        return type(exc).__name__
