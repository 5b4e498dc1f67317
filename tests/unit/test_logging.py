"""Log lines: stable event names, key=value or JSON, secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

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


def _configured(fmt: str) -> tuple[logging.Handler, io.StringIO]:
    from conveyor.observability.logging import configure_logging

    configure_logging("INFO", fmt)
    handler = logging.getLogger().handlers[0]
    stream = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return handler, stream


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_the_fast_completed_line_is_the_line_a_record_would_give(fmt: str) -> None:
    handler, stream = _configured(fmt)
    try:
        event = JobEvent("j 1", "my task", "taskQueue", 2, 6, duration_ms=12.34)
        LoggingHooks().job_completed(event)  # no LogRecord: straight to the handler
        handler.flush()
        fast = stream.getvalue().strip()
        record = _record(
            {"job_id": "j 1", "name": "my task", "queue": "taskQueue", "attempt": "2/6",
             "duration_ms": 12.3}
        )  # fmt: skip
        record.msg = "job_completed"
        formatter = handler.formatter
        assert formatter is not None
        slow = formatter.format(record)
        _assert_same_but_time(fmt, fast, slow)
        if fmt != "json":
            assert 'job_id="j 1" name="my task"' in fast
    finally:
        logging.getLogger().handlers.clear()


@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("outcome", ["job_failed", "job_retrying"])
def test_the_fast_failure_lines_are_the_lines_a_record_would_give(fmt: str, outcome: str) -> None:
    handler, stream = _configured(fmt)
    error = 'KeyError: "é" at\nline two\t='
    try:
        event = JobEvent(
            "j 1", "my task", "taskQueue", 2, 6, duration_ms=12.34, error=error, retry_delay_ms=40
        )
        getattr(LoggingHooks(), outcome)(event)  # no LogRecord: straight to the handler
        handler.flush()
        fast = stream.getvalue().strip()
        fields: dict[str, object] = {
            "job_id": "j 1", "name": "my task", "queue": "taskQueue", "attempt": "2/6",
            "duration_ms": 12.3, "error": error,
        }  # fmt: skip
        if outcome == "job_retrying":
            fields["retry_in_ms"] = 40
        record = _record(fields)
        record.msg = outcome
        record.levelname = "ERROR" if outcome == "job_failed" else "WARNING"
        formatter = handler.formatter
        assert formatter is not None
        slow = formatter.format(record)
        _assert_same_but_time(fmt, fast, slow)
        if fmt != "json":
            assert 'error="KeyError: \\"é\\" at\\nline two\\t="' in fast
    finally:
        logging.getLogger().handlers.clear()


async def test_job_lines_wait_briefly_and_any_other_line_takes_them_along() -> None:
    from conveyor.observability.logging import FLUSH_DELAY_S

    _, stream = _configured("console")
    try:
        hooks = LoggingHooks()
        hooks.job_completed(JobEvent("j1", "simulate", "q", 1, 6))
        hooks.job_completed(JobEvent("j2", "simulate", "q", 1, 6))
        assert stream.getvalue() == ""  # kept for one write
        await asyncio.sleep(FLUSH_DELAY_S * 3)
        assert [line.split()[3] for line in stream.getvalue().splitlines()] == [
            "job_id=j1",
            "job_id=j2",
        ]
        hooks.job_completed(JobEvent("j3", "simulate", "q", 1, 6))
        logging.getLogger("conveyor.worker").info("worker_stopped")  # at once, after j3
        assert [line.split()[-1] for line in stream.getvalue().splitlines()][2:] == [
            "duration_ms=0.0",
            "worker_stopped",
        ]
    finally:
        logging.getLogger().handlers.clear()


def test_job_lines_logged_off_the_event_loop_are_written_at_once() -> None:
    _, stream = _configured("console")
    try:
        LoggingHooks().job_completed(JobEvent("j1", "simulate", "q", 1, 6))
        assert "job_id=j1" in stream.getvalue()
    finally:
        logging.getLogger().handlers.clear()


def test_another_listener_gets_ordinary_records(caplog: pytest.LogCaptureFixture) -> None:
    handler, stream = _configured("console")
    try:
        logging.getLogger().addHandler(caplog.handler)  # a second listener next to ours
        caplog.set_level(logging.INFO, logger="conveyor.jobs")
        LoggingHooks().job_completed(JobEvent("j1", "simulate", "q", 1, 6))
        handler.flush()
        assert [r.getMessage() for r in caplog.records] == ["job_completed"]
        assert "job_completed job_id=j1" in stream.getvalue()  # and ours still gets the line
    finally:
        logging.getLogger().handlers.clear()


def test_job_lines_still_go_out_when_a_second_event_loop_takes_over() -> None:
    """A flush timer of a finished loop never runs; the next loop schedules its own."""
    from conveyor.observability.logging import FLUSH_DELAY_S

    _, stream = _configured("console")
    try:
        hooks = LoggingHooks()

        async def first() -> None:
            hooks.job_completed(JobEvent("j1", "simulate", "q", 1, 6))  # loop ends at once

        async def second() -> None:
            hooks.job_completed(JobEvent("j2", "simulate", "q", 1, 6))
            await asyncio.sleep(FLUSH_DELAY_S * 3)

        asyncio.run(first())
        asyncio.run(second())
        assert "job_id=j1" in stream.getvalue()
        assert "job_id=j2" in stream.getvalue()
    finally:
        logging.getLogger().handlers.clear()


def _assert_same_but_time(fmt: str, fast: str, slow: str) -> None:
    """The cached line equals the ordinary formatter's, all but the time stamp."""
    if fmt == "json":
        fast_doc, slow_doc = json.loads(fast), json.loads(slow)
        assert fast_doc.pop("ts")
        assert slow_doc.pop("ts")
        assert fast_doc == slow_doc
    else:
        assert fast.split(" ", 1)[1] == slow.split(" ", 1)[1]
