"""Cleanup's rules, by tables: durations, cutoffs, what expires, when a run is due."""

from __future__ import annotations

import pytest

from conveyor.errors import ConfigurationError
from conveyor.maintenance import (
    CleanupReport,
    FailureEntry,
    RetentionPolicy,
    format_duration,
    is_due,
    parse_duration,
    select_expired,
)
from conveyor.maintenance.retention import cutoff_ms, iso_ms, next_due_ms

DAY_MS = 86_400_000
NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("3600", 3600),
        ("2.5", 2.5),
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43_200),
        ("7d", 604_800),
        ("2w", 1_209_600),
        ("1h30m", 5400),
        ("1.5d", 129_600),
        (" 7D ", 604_800),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "-1d", "d", "7 days", "1h 30m", "1e3", "inf", "30m5"])
def test_parse_duration_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (90, "90s"), (1800, "30m"), (5400, "90m"), (86_400, "1d"),
     (604_800, "1w"), (1_209_600, "2w"), (2.5, "2.5s"), (172_800, "2d")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_format_duration_refuses_negative() -> None:
    with pytest.raises(ValueError, match="at least 0"):
        format_duration(-1)


def test_cutoffs() -> None:
    policy = RetentionPolicy(failed_s=7 * 86_400, completed_s=3600)
    assert policy.failed_cutoff_ms(NOW) == NOW - 7 * DAY_MS
    assert policy.completed_cutoff_ms(NOW) == NOW - 3_600_000
    assert RetentionPolicy(failed_s=0).completed_cutoff_ms(NOW) is None
    assert cutoff_ms(NOW, 0.0015) == NOW - 2  # rounded to whole ms


@pytest.mark.parametrize("bad", [{"failed_s": -1}, {"failed_s": 1, "completed_s": -5},
                                 {"failed_s": float("inf")}])  # fmt: skip
def test_retention_policy_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="retention"):
        RetentionPolicy(**bad)


def _entry(
    key: str,
    failed_days_ago: float,
    *,
    queue: str | None = "q",
    prefix: str | None = "bull",
    job_days_ago: float | None = None,
) -> FailureEntry:
    return FailureEntry(
        record_key=key,
        failed_at_ms=NOW - round(failed_days_ago * DAY_MS),
        queue=queue,
        prefix=prefix,
        job_finished_ms=None if job_days_ago is None else NOW - round(job_days_ago * DAY_MS),
    )


SELECT_CASES = [
    # (entry, expired?)
    (_entry("old, job gone (removeOnFail or retried)", 8), True),
    (_entry("old, job old too", 8, job_days_ago=8), True),
    (_entry("exactly at the cutoff", 7, job_days_ago=7), True),
    (_entry("a ms younger than the cutoff", 7 - 1 / DAY_MS), False),
    (_entry("recent", 1, job_days_ago=1), False),
    (_entry("old record, job failed again recently", 8, job_days_ago=1), False),
    (_entry("another queue's", 30, queue="other"), False),
    (_entry("another prefix's", 30, prefix="other"), False),
    (_entry("dangling index entry", 8, queue=None, prefix=None), True),
    (_entry("recent dangling index entry", 1, queue=None, prefix=None), False),
]


@pytest.mark.parametrize(
    ("entry", "expired"), SELECT_CASES, ids=[c[0].record_key for c in SELECT_CASES]
)
def test_select_expired(entry: FailureEntry, expired: bool) -> None:
    policy = RetentionPolicy(failed_s=7 * 86_400)
    chosen = select_expired([entry], NOW, policy, queue="q", prefix="bull")
    assert chosen == ([entry] if expired else [])


def test_select_expired_keeps_order_and_filters_a_mix() -> None:
    entries = [c[0] for c in SELECT_CASES]
    chosen = select_expired(entries, NOW, RetentionPolicy(failed_s=7 * 86_400), queue="q",
                            prefix="bull")  # fmt: skip
    assert chosen == [c[0] for c in SELECT_CASES if c[1]]


@pytest.mark.parametrize(
    ("last_run", "now", "interval_s", "due", "next_due"),
    [
        (None, NOW, 86_400, True, NOW),
        (NOW - DAY_MS, NOW, 86_400, True, NOW),
        (NOW - DAY_MS + 1, NOW, 86_400, False, NOW + 1),
        (NOW, NOW, 86_400, False, NOW + DAY_MS),
        (NOW - 3_600_000, NOW, 3600, True, NOW),
        (NOW + 5000, NOW, 60, False, NOW + 65_000),  # last run "in the future": clock skew
    ],
)
def test_is_due(
    last_run: int | None, now: int, interval_s: float, due: bool, next_due: int
) -> None:
    assert is_due(last_run, now, interval_s) is due
    assert next_due_ms(last_run, interval_s, now) == next_due


def test_report_round_trips_through_json() -> None:
    report = CleanupReport(
        queue="q",
        prefix="bull",
        trigger="schedule",
        dry_run=False,
        started_at_ms=NOW,
        finished_at_ms=NOW + 42,
        failed_retention_s=604_800,
        failed_cutoff_ms=NOW - 7 * DAY_MS,
        completed_retention_s=None,
        completed_cutoff_ms=None,
        failed_jobs_removed=3,
        failure_records_removed=4,
        completed_jobs_removed=0,
        index_entries_dropped=1,
        runner="host:1",
        sample_job_ids=["a", "b"],
    )
    doc = report.to_json()
    assert '"started_at":"2027-01-15T08:00:00.000Z"' in doc
    assert '"duration_ms":42' in doc
    assert CleanupReport.from_json(doc) == report
    assert report.log_fields()["older_than"] == "1w"
    assert report.log_fields()["cutoff"] == iso_ms(NOW - 7 * DAY_MS)
    assert report.log_fields()["failed_jobs_removed"] == 3


def test_a_dry_runs_log_says_would_remove() -> None:
    """It logged failed_jobs_removed=88 beside dry_run=True."""
    report = CleanupReport(
        queue="q", prefix="bull", trigger="manual", dry_run=True, started_at_ms=NOW,
        finished_at_ms=NOW + 1, failed_retention_s=7 * 86400, failed_cutoff_ms=NOW - 7 * DAY_MS,
        completed_retention_s=None, completed_cutoff_ms=None, failed_jobs_removed=88,
        failure_records_removed=88, completed_jobs_removed=0, index_entries_dropped=2,
    )  # fmt: skip
    fields = report.log_fields()
    assert fields["would_remove_failed_jobs"] == 88
    assert fields["would_remove_failure_records"] == 88
    assert fields["would_drop_index_entries"] == 2
    assert not [name for name in fields if name.endswith(("_removed", "_dropped"))]
