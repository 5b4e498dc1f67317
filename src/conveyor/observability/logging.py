"""Structured logs: stable snake_case event names with key=value context.

Library code logs ``log.info("job_completed", job_id=...)`` (``conveyor.log``); only entrypoints
call ``configure_logging``. Console format for terminals, JSON (one object a line) for
containers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from json.encoder import encode_basestring
from typing import Any

import orjson

from conveyor.hooks import JobEvent

#: Field names whose values never reach a log line.
_SECRET_KEYS = frozenset({"password", "secret", "token", "authorization", "api_key", "api_keys"})
_NEEDS_QUOTES = re.compile(r'[\s="]')


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    if not isinstance(fields, dict):
        return {}
    if _SECRET_KEYS.isdisjoint(fields):
        return fields
    return {k: "***" if k in _SECRET_KEYS else v for k, v in fields.items()}


def _job_fields(event: JobEvent, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "name": event.name,
        "queue": event.queue,
        "attempt": f"{event.attempt}/{event.max_attempts}",
        **extra,
    }


def _completed_fields(event: JobEvent) -> dict[str, Any]:
    return _job_fields(event, duration_ms=round(event.duration_ms, 1))


def _quote(value: Any) -> str:
    kind = type(value)
    if kind is int or kind is float:
        return str(value)
    text = value if kind is str else str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return encode_basestring(text)  # json.dumps(text, ensure_ascii=False), without its set-up
    return text


class _Clock:
    """UTC timestamps for log lines, the expensive part computed once per second."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._second = -1
        self._prefix = ""
        self._ms = -1
        self._last = ""

    def stamp(self, created: float) -> str:
        ms = int(created * 1000)
        if ms == self._ms:  # busy workers log many lines within one millisecond
            return self._last
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._prefix = time.strftime(self.fmt, time.gmtime(second))
        self._ms = ms
        self._last = f"{self._prefix}.{ms - second * 1000:03d}"
        return self._last


class ConsoleFormatter(logging.Formatter):
    """``10:00:00.123 INFO    job_completed job_id=... duration_ms=12.3`` (UTC)"""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%H:%M:%S")
        self._middles: dict[tuple[str, str], str] = {}

    def line(
        self, created: float, levelname: str, logger: str, event: str, fields: dict[str, Any]
    ) -> str:
        head = f"{self._clock.stamp(created)} {levelname:<7} {event}"
        if not fields:
            return head
        return " ".join([head, *[f"{k}={_quote(v)}" for k, v in fields.items()]])

    def _middle(self, event: JobEvent) -> str:
        """`` name=… queue=… attempt=``: a job line's constant part, cached per task and queue."""
        middle = self._middles.get((event.name, event.queue))
        if middle is None:
            if len(self._middles) > 1000:
                self._middles.clear()
            middle = f" name={_quote(event.name)} queue={_quote(event.queue)} attempt="
            self._middles[(event.name, event.queue)] = middle
        return middle

    def completed_line(self, created: float, logger: str, event: JobEvent) -> str:
        """``line()`` of a job_completed event (the one line every job writes), built with
        its constant part cached per task name and queue."""
        return (
            f"{self._clock.stamp(created)} INFO    job_completed job_id={_quote(event.job_id)}"
            f"{self._middle(event)}{event.attempt}/{event.max_attempts}"
            f" duration_ms={round(event.duration_ms, 1)}"
        )

    def job_line(
        self,
        created: float,
        levelname: str,
        logger: str,
        message: str,
        event: JobEvent,
        extra: tuple[tuple[str, Any], ...],
    ) -> str:
        """``line()`` of a job event (``_job_fields(event)`` then ``extra``), built as
        ``completed_line`` is."""
        head = (
            f"{self._clock.stamp(created)} {levelname:<7} {message}"
            f" job_id={_quote(event.job_id)}{self._middle(event)}"
            f"{event.attempt}/{event.max_attempts}"
        )
        return head + "".join([f" {k}={_quote(v)}" for k, v in extra])

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(
            record.created, record.levelname, record.name, record.getMessage(), _fields(record)
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event and the fields."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S")

    def _doc(
        self, created: float, levelname: str, logger: str, event: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "ts": self._clock.stamp(created) + "Z",
            "level": levelname.lower(),
            "logger": logger,
            "event": event,
            **fields,
        }

    def line(
        self, created: float, levelname: str, logger: str, event: str, fields: dict[str, Any]
    ) -> str:
        return orjson.dumps(
            self._doc(created, levelname, logger, event, fields), default=str
        ).decode()

    def completed_line(self, created: float, logger: str, event: JobEvent) -> str:
        return self.line(created, "INFO", logger, "job_completed", _completed_fields(event))

    def job_line(
        self,
        created: float,
        levelname: str,
        logger: str,
        message: str,
        event: JobEvent,
        extra: tuple[tuple[str, Any], ...],
    ) -> str:
        return self.line(created, levelname, logger, message, _job_fields(event, **dict(extra)))

    def format(self, record: logging.LogRecord) -> str:
        doc = self._doc(
            record.created, record.levelname, record.name, record.getMessage(), _fields(record)
        )
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


#: Routine job lines written on an event loop wait at most this long before they are written out
#: (one write for all of them).
FLUSH_DELAY_S = 0.05
#: ... or until this many are waiting.
FLUSH_LINES = 256


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes formatted lines to a stream; batches the per-job ones.

    A write per line was a system call per job. ``LoggingHooks`` hands its routine per-job lines
    (job_completed, job_started) to ``batch()``: on an event loop they are kept for at most
    ``FLUSH_DELAY_S`` (or ``FLUSH_LINES`` lines) and written together. Every ordinary record
    (``emit``: service lifecycle, warnings, errors) is written at once, with the batched lines
    before it, and ``flush()`` (logging's own at exit included) writes everything. What a
    SIGKILL can lose is the last 50 ms of job_completed lines, never a warning or an error.
    """

    def __init__(self, stream: Any, formatter: ConsoleFormatter | JsonFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.line_formatter = formatter
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._write_now(line)

    def write(self, line: str, levelno: int) -> None:
        """A line from the fast path: batched when routine, else written at once."""
        if levelno >= logging.WARNING:
            self._write_now(line)
        else:
            self.batch(line)

    def _write_now(self, line: str) -> None:
        """Write ``line`` at once, after the lines waiting before it."""
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self._write_out()

    def batch(self, line: str) -> None:
        """Queue a routine line; it is written within ``FLUSH_DELAY_S``."""
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            if len(self._lines) >= FLUSH_LINES:
                self._write_out()
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop: nobody would flush later
                self._write_out()
                return
            if self._timer is not None and self._timer_loop is loop:
                return  # a flush is due already (a timer of a finished loop would never run)
            self._timer = loop.call_later(FLUSH_DELAY_S, self.flush)
            self._timer_loop = loop

    def _write_out(self) -> None:
        lines, self._lines = self._lines, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not lines or self.stream is None:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:  # a closed or broken stream: as logging does, do not raise
            pass

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_out()


def fast_route(logger: logging.Logger, level: int) -> LineHandler | None:
    """The LineHandler that a record of ``logger`` at ``level`` would reach and nothing else
    would see, or None. Lets hot code skip building a LogRecord; any other handler or filter on
    the way (pytest's caplog, a user's own set-up) means the ordinary path."""
    if not logger.isEnabledFor(level):
        return None
    current: logging.Logger | None = logger
    found: LineHandler | None = None
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None or type(handler) is not LineHandler or handler.filters:
                return None
            if level < handler.level:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Send Conveyor's logs to stderr in the chosen format (call once, at the entrypoint)."""
    # Our lines never show source file, thread or process: skip collecting them per record
    # (the documented switches; it halves the cost of a log line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]
    handler = LineHandler(sys.stderr, JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class LoggingHooks:
    """Logs every job outcome as a structured event.

    When the line would go only to Conveyor's own handler (``configure_logging``), it is
    formatted and queued directly, without a LogRecord: the same line for a fraction of the
    cost. Anything else listening (another handler, a filter, pytest's caplog) gets ordinary
    records.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("conveyor.jobs")

    def _emit(self, level: int, message: str, fields: dict[str, Any]) -> None:
        handler = fast_route(self.log, level)
        if handler is None:
            self.log.log(level, message, extra={"fields": fields})
            return
        line = handler.line_formatter.line(
            time.time(), logging.getLevelName(level), self.log.name, message, fields
        )
        handler.write(line, level)

    def job_started(self, event: JobEvent) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self._emit(
                logging.DEBUG, "job_started", _job_fields(event, wait_ms=round(event.wait_ms, 1))
            )

    def job_completed(self, event: JobEvent) -> None:
        handler = fast_route(self.log, logging.INFO)
        if handler is None:
            self.log.info("job_completed", extra={"fields": _completed_fields(event)})
            return
        handler.write(
            handler.line_formatter.completed_line(time.time(), self.log.name, event), logging.INFO
        )

    def _emit_job(
        self, level: int, message: str, event: JobEvent, extra: tuple[tuple[str, Any], ...]
    ) -> None:
        """``_emit`` of a job event's line: its fields, then ``extra``."""
        handler = fast_route(self.log, level)
        if handler is None:
            self.log.log(level, message, extra={"fields": _job_fields(event, **dict(extra))})
            return
        line = handler.line_formatter.job_line(
            time.time(), logging.getLevelName(level), self.log.name, message, event, extra
        )
        handler.write(line, level)

    def job_retrying(self, event: JobEvent) -> None:
        self._emit_job(
            logging.WARNING,
            "job_retrying",
            event,
            (
                ("duration_ms", round(event.duration_ms, 1)),
                ("error", event.error),
                ("retry_in_ms", event.retry_delay_ms),
            ),
        )

    def job_failed(self, event: JobEvent) -> None:
        self._emit_job(
            logging.ERROR,
            "job_failed",
            event,
            (("duration_ms", round(event.duration_ms, 1)), ("error", event.error)),
        )

    def job_deferred(self, event: JobEvent) -> None:
        self._emit(
            logging.WARNING,
            "job_deferred",
            _job_fields(
                event,
                reason=event.error,
                deferrals=event.deferrals,
                retry_in_ms=event.retry_delay_ms,
            ),
        )
