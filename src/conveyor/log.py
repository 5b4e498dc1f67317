"""Structured log calls in one line: ``log.info("job_released", job_id=job_id)``.

A stdlib logger underneath: the event name is the message and the keywords are its fields
(``record.fields``, as ``conveyor.observability.logging`` formats them and tests read them).
Only entrypoints configure logging; nothing here does.
"""

from __future__ import annotations

import logging


class EventLogger:
    """A ``logging.Logger`` whose calls take an event name and its fields as keywords."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def _log(self, level: int, event: str, fields: dict[str, object], exc_info: bool) -> None:
        if self.logger.isEnabledFor(level):
            # stacklevel 3: the record names the caller's line, not this module's.
            extra = {"fields": fields} if fields else None
            self.logger.log(level, event, exc_info=exc_info, extra=extra, stacklevel=3)

    def debug(self, event: str, /, **fields: object) -> None:
        self._log(logging.DEBUG, event, fields, False)

    def info(self, event: str, /, **fields: object) -> None:
        self._log(logging.INFO, event, fields, False)

    def warning(self, event: str, /, **fields: object) -> None:
        self._log(logging.WARNING, event, fields, False)

    def error(self, event: str, /, **fields: object) -> None:
        self._log(logging.ERROR, event, fields, False)

    def critical(self, event: str, /, **fields: object) -> None:
        self._log(logging.CRITICAL, event, fields, False)

    def exception(self, event: str, /, **fields: object) -> None:
        """An ERROR with the exception being handled."""
        self._log(logging.ERROR, event, fields, True)


def get_logger(name: str) -> EventLogger:
    """The EventLogger of ``logging.getLogger(name)``."""
    return EventLogger(logging.getLogger(name))
