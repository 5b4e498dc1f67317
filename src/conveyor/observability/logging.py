"""Structured logs: stable snake_case event names with key=value context.

Library code logs ``logger.info("job_completed", extra={"fields": {...}})``; only entrypoints
call ``configure_logging``. Console format for terminals, JSON (one object a line) for
containers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from conveyor.hooks import JobEvent

_SECRET_KEYS = ("password", "secret", "token", "authorization", "api_key")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


class ConsoleFormatter(logging.Formatter):
    """``2026-11-27 10:00:00.123 INFO  job_completed job_id=... duration_ms=12.3``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        parts = [f"{stamp} {record.levelname:<7} {record.getMessage()}"]
        parts += [f"{k}={_quote(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Send Conveyor's logs to stderr in the chosen format (call once, at the entrypoint)."""
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
