"""Structured logs: stable snake_case event names with key=value context.

Library code logs ``logger.info("job_completed", extra={"fields": {...}})``; only entrypoints
call ``configure_logging``. Console format for terminals, JSON (one object a line) for
containers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
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


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


class _Clock:
    """UTC timestamps for log lines, the expensive part computed once per second."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self._second = -1
        self._prefix = ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime(self.fmt, time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}"


class ConsoleFormatter(logging.Formatter):
    """``10:00:00.123 INFO    job_completed job_id=... duration_ms=12.3`` (UTC)"""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self._clock.stamp(record.created)} {record.levelname:<7} {record.getMessage()}"
        fields = _fields(record)
        line = (
            " ".join([head, *[f"{k}={_quote(v)}" for k, v in fields.items()]]) if fields else head
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event and the fields."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock("%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self._clock.stamp(record.created) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Send Conveyor's logs to stderr in the chosen format (call once, at the entrypoint)."""
    # Our lines never show source file, thread or process: skip collecting them per record
    # (the documented switches; it halves the cost of a log line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class LoggingHooks:
    """Logs every job outcome as a structured event."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("conveyor.jobs")

    def _fields(self, event: JobEvent, **extra: Any) -> dict[str, Any]:
        return {
            "job_id": event.job_id,
            "name": event.name,
            "queue": event.queue,
            "attempt": f"{event.attempt}/{event.max_attempts}",
            **extra,
        }

    def job_started(self, event: JobEvent) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "job_started",
                extra={"fields": self._fields(event, wait_ms=round(event.wait_ms, 1))},
            )

    def job_completed(self, event: JobEvent) -> None:
        self.log.info(
            "job_completed",
            extra={"fields": self._fields(event, duration_ms=round(event.duration_ms, 1))},
        )

    def job_retrying(self, event: JobEvent) -> None:
        self.log.warning(
            "job_retrying",
            extra={
                "fields": self._fields(
                    event,
                    duration_ms=round(event.duration_ms, 1),
                    error=event.error,
                    retry_in_ms=event.retry_delay_ms,
                )
            },
        )

    def job_failed(self, event: JobEvent) -> None:
        self.log.error(
            "job_failed",
            extra={
                "fields": self._fields(
                    event, duration_ms=round(event.duration_ms, 1), error=event.error
                )
            },
        )
