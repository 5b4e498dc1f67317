"""Log lines: stable event names, key=value or JSON, secrets masked."""

from __future__ import annotations

import json
import logging

from conveyor.hooks import JobEvent
from conveyor.observability.logging import ConsoleFormatter, JsonFormatter, LoggingHooks


def _record(fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("conveyor.jobs", logging.INFO, __file__, 1, "job_failed", (), None)
    record.fields = fields
    record.created = 1_764_288_000.25  # 2025-11-28 00:00:00.250 UTC
    return record


def test_console_lines_are_key_value_and_quote_what_needs_it() -> None:
    line = ConsoleFormatter().format(_record({"job_id": "a1", "error": 'Boom: "x" y', "n": 3}))
    assert line == ('00:00:00.250 INFO    job_failed job_id=a1 error="Boom: \\"x\\" y" n=3')


def test_json_lines_are_one_object() -> None:
    doc = json.loads(JsonFormatter().format(_record({"job_id": "a1", "attempt": "2/6"})))
    assert doc == {
        "ts": "2025-11-28T00:00:00.250Z",
        "level": "info",
        "logger": "conveyor.jobs",
        "event": "job_failed",
        "job_id": "a1",
        "attempt": "2/6",
    }


def test_secret_fields_are_masked_in_both_formats() -> None:
    record = _record({"password": "hunter2", "api_key": "k", "job_id": "a1"})
    assert "hunter2" not in ConsoleFormatter().format(record)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["password"] == doc["api_key"] == "***"


def test_hooks_log_each_outcome_with_its_event_name(caplog: object) -> None:
    import pytest

    assert isinstance(caplog, pytest.LogCaptureFixture)
    caplog.set_level(logging.INFO, logger="conveyor.jobs")
    hooks = LoggingHooks()
    event = JobEvent("j1", "simulate", "taskQueue", 2, 6, duration_ms=12.34, error="Boom")
    hooks.job_completed(event)
    hooks.job_retrying(event)
    hooks.job_failed(event)
    assert [r.getMessage() for r in caplog.records] == [
        "job_completed",
        "job_retrying",
        "job_failed",
    ]
    assert caplog.records[0].fields == {  # type: ignore[attr-defined]
        "job_id": "j1",
        "name": "simulate",
        "queue": "taskQueue",
        "attempt": "2/6",
        "duration_ms": 12.3,
    }
