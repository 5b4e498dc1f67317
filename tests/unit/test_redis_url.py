"""CONVEYOR_REDIS_URL, parsed once: every form, and one readable problem for each bad one."""

from __future__ import annotations

import pytest

from conveyor.config import load_settings
from conveyor.errors import ConfigurationError
from conveyor.redis_url import HostPort, parse_redis_url, redis_url_problem


def test_a_sentinel_url_names_its_sentinels_master_database_and_the_masters_credentials() -> None:
    target = parse_redis_url("redis+sentinel://app:s%40cret@10.0.0.1:26379,[::1],sen:5000/main/3")
    assert target.uses_sentinel
    assert not target.tls
    assert target.sentinels == (
        HostPort("10.0.0.1", 26379),
        HostPort("::1", 26379),
        HostPort("sen", 5000),
    )
    assert (target.master_name, target.db) == ("main", 3)
    assert (target.username, target.password) == ("app", "s@cret")
    assert target.server is None


def test_rediss_sentinel_keeps_its_tls_options_and_drops_unknown_query_parameters() -> None:
    target = parse_redis_url(
        "rediss+sentinel://:pw@h:1/m?ssl_ca_certs=/ca.crt&ssl_cert_reqs=none&other=1"
    )
    assert target.tls
    assert target.uses_sentinel
    assert target.tls_options == {"ssl_ca_certs": "/ca.crt", "ssl_cert_reqs": "none"}
    assert (target.username, target.password, target.db) == (None, "pw", 0)


@pytest.mark.parametrize(
    ("url", "server", "db"),
    [
        ("redis://localhost", HostPort("localhost", 6379), 0),
        ("rediss://u:p@[::1]:7000/2", HostPort("::1", 7000), 2),
    ],
)
def test_one_server_urls(url: str, server: HostPort, db: int) -> None:
    target = parse_redis_url(url)
    assert (target.server, target.db, target.uses_sentinel) == (server, db, False)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:1", "must start with redis://, rediss://, unix://, redis+sentinel://"),
        ("redis+sentinel:///main", "names no sentinel"),
        ("redis+sentinel://h:1", "names no master"),
        ("redis+sentinel://h:1,:2/main", "':2' names no host"),
        ("redis+sentinel://h:1,h:99999/main", "the port '99999' is not a number"),
        ("redis+sentinel://h:1/main/x", "the database 'x' is not a number"),
        ("redis+sentinel://h:1/main/0/1", "has more after the database"),
        ("rediss+sentinel://:secret@h:port/main", "the port 'port' is not a number"),
    ],
)
def test_a_bad_url_gets_one_readable_problem_without_its_password(url: str, problem: str) -> None:
    found = redis_url_problem(url)
    assert found is not None
    assert problem in found
    assert "secret" not in found
    with pytest.raises(ConfigurationError, match="invalid Redis URL"):
        parse_redis_url(url)


def test_the_settings_refuse_a_bad_sentinel_url_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis+sentinel://h:1")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "names no master" in str(caught.value)
    assert "\n" not in str(caught.value)
