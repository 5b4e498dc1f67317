"""conveyor.log: one-line structured calls make the same records as ``extra={"fields": ...}``."""

from __future__ import annotations

import logging

import pytest

from conveyor.log import get_logger


def test_fields_are_keywords_and_the_record_names_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.test")
    log = get_logger("conveyor.test")
    log.warning("job_released", job_id="7", event="a field may be called event")
    (record,) = caplog.records
    assert record.getMessage() == "job_released"
    assert record.levelno == logging.WARNING
    assert record.fields == {"job_id": "7", "event": "a field may be called event"}  # type: ignore[attr-defined]
    assert record.filename == "test_event_logger.py"
    assert record.funcName == "test_fields_are_keywords_and_the_record_names_the_caller"


def test_no_fields_no_fields_attribute_and_exception_carries_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.test")
    log = get_logger("conveyor.test")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("fetch_failed")
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert not hasattr(record, "fields")
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


def test_a_disabled_level_makes_no_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.test")
    log = get_logger("conveyor.test")
    log.debug("quiet", n=1)
    log.info("quiet", n=2)
    log.error("loud", n=3)
    assert [(r.getMessage(), r.fields) for r in caplog.records] == [("loud", {"n": 3})]  # type: ignore[attr-defined]
