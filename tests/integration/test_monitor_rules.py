"""The monitor's pure rules, by table: error grouping, credentials, settings, buckets.

(No Redis here; these sit beside the monitor's integration tests they support.)
"""

from __future__ import annotations

import pytest
from fastapi.security import HTTPBasicCredentials

from conveyor.config import Settings, load_settings
from conveyor.errors import ConfigurationError
from conveyor.observability.metrics import QueueMetrics, render_metrics
from conveyor.observability.stats import (
    DURATION_BUCKETS_S,
    Histogram,
    bucket_for,
    parse_totals,
)
from conveyor.services.monitor.auth import Access
from conveyor.services.monitor.inspector import worker_name_matcher
from conveyor.services.monitor.jobs import error_pattern


@pytest.mark.parametrize(
    ("reason", "pattern"),
    [
        (
            "ConnectionError: connect to 10.0.0.7:6379 refused",
            "ConnectionError: connect to <ip>:<n> refused",
        ),
        (
            "TimeoutError: attempt timed out after 0.25 s",
            "TimeoutError: attempt timed out after <n> s",
        ),
        ("HTTPError: 500 Internal Server Error", "HTTPError: 500 Internal Server Error"),
        ("KeyError: 'user 3f2a9b1c-1111-2222-3333-444455556666'", "KeyError: 'user <id>'"),
        (
            "ValueError: bad checksum deadbeef1234 at 0x7f00ab",
            "ValueError: bad checksum <hex> at <hex>",
        ),
        ("first line\n  traceback line 2", "first line"),
        ("", "(no reason recorded)"),
        (None, "(no reason recorded)"),
    ],
)
def test_error_pattern(reason: str | None, pattern: str) -> None:
    assert error_pattern(reason) == pattern


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        (None, None),
        (("admin", "wrong"), None),
        (("ghost", "s3:cret"), None),
        (("admin", "s3:cret"), ("admin", "rw", True)),
        (("viewer", "look"), ("viewer", "ro", False)),
    ],
)
def test_access_identifies_accounts(
    credentials: tuple[str, str] | None, expected: tuple[str, str, bool] | None
) -> None:
    access = Access(Settings(monitor_users="admin:s3:cret:rw, viewer:look:ro"))
    sent = (
        None
        if credentials is None
        else HTTPBasicCredentials(username=credentials[0], password=credentials[1])
    )
    principal = access.identify(sent)
    if expected is None:
        assert principal is None
    else:
        assert principal is not None
        assert (principal.user, principal.role, principal.can_act) == expected


def test_accounts_must_be_ascii() -> None:
    """HTTP Basic credentials are read as ASCII: a non-ASCII account could never log in, so
    it is refused at start-up rather than answered with 401s."""
    with pytest.raises(ConfigurationError, match="ASCII"):
        Access(Settings(monitor_users="admin:pässword:rw"))


def test_no_accounts_means_open_unless_read_only() -> None:
    open_access = Access(Settings()).identify(None)
    assert open_access is not None
    assert open_access.can_act
    read_only = Access(Settings(monitor_read_only=True)).identify(None)
    assert read_only is not None
    assert not read_only.can_act


@pytest.mark.parametrize(
    ("users", "needle"),
    [
        ("admin", "user:password:role"),
        ("admin:pw", "user:password:role"),
        ("admin:pw:superuser", "user:password:role"),
        (":pw:rw", "user:password:role"),
        ("admin::rw", "user:password:role"),
        ("a:x:rw,a:y:ro", "listed twice"),
    ],
)
def test_bad_monitor_accounts_are_refused(users: str, needle: str) -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_MONITOR_USERS") as caught:
        load_settings(monitor_users=users)
    assert needle in str(caught.value)
    assert "pw" not in str(caught.value).replace("password", "")  # no secret in the message


def test_monitor_settings_defaults() -> None:
    settings = Settings()
    assert (settings.monitor_host, settings.monitor_port) == ("127.0.0.1", 8001)
    assert settings.monitor_users == []
    assert "secret" not in repr(Settings(monitor_users="admin:secret:rw"))


def test_worker_connection_names_follow_node_bullmq() -> None:
    assert worker_name_matcher("bull", "taskQueue") == ("bull:dGFza1F1ZXVl", "bull:dGFza1F1ZXVl:w:")


@pytest.mark.parametrize(
    ("seconds", "label"),
    [
        (0.0, "0.005"),
        (0.005, "0.005"),
        (0.0051, "0.01"),
        (1.0, "1.0"),
        (3600.0, "3600.0"),
        (3600.1, "+Inf"),
    ],
)
def test_bucket_for(seconds: float, label: str) -> None:
    assert bucket_for(seconds) == label


def test_histogram_is_cumulative_and_ends_with_inf() -> None:
    histogram = Histogram(buckets={"0.01": 2, "1.0": 3, "+Inf": 1})
    cumulative = histogram.cumulative()
    assert len(cumulative) == len(DURATION_BUCKETS_S) + 1
    assert dict(cumulative)["0.005"] == 0
    assert dict(cumulative)["0.01"] == 2
    assert dict(cumulative)["1.0"] == 5
    assert cumulative[-1] == ("+Inf", 6)


def test_totals_parse_back_by_task() -> None:
    totals = parse_totals(
        [
            ("completed:send", "4"),
            ("failed:send", "1"),
            ("run_sum_ms:send", "1500"),
            ("run_le_0.5:send", "5"),
            ("retried:a:b", "2"),  # a task name holding ':'
            ("mystery:send", "9"),  # an unknown metric is ignored
        ]
    )
    assert totals["send"].completed == 4
    assert totals["send"].failed == 1
    assert totals["send"].run.sum_s == 1.5
    assert dict(totals["send"].run.cumulative())["+Inf"] == 5
    assert totals["a:b"].retried == 2


def test_metrics_render_label_values_safely() -> None:
    text = render_metrics(
        [QueueMetrics(queue='we"ird\nqueue', counts={"waiting": 2}, workers=1)]
    ).decode()
    assert 'conveyor_queue_jobs{queue="we\\"ird\\nqueue",state="waiting"} 2.0' in text
