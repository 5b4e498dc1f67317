"""Redis Sentinel: real master, replica and three sentinels (tests/support/sentinel.py), and
real ``conveyor`` processes on a ``redis+sentinel://`` URL (the sentinels with a password of
their own).

- The CLI (stats, produce, cleanup) works through the sentinels; a wrong sentinel password or
  master name is one clear error (which the CLI prints as its one ``conveyor: error:`` line;
  a malformed URL: tests/unit/test_redis_url.py).
- SIGKILL the master under API and worker load with CONVEYOR_ENQUEUE_REPLICAS=1: the sentinels
  promote the replica, every process finds it by itself (nothing is restarted), every job the
  API acknowledged completes on it, and in between the API and the monitor answer 503 with
  Retry-After, never a hang. The figures (the 503 window) go to docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from conveyor.config import EvictionCheck
from conveyor.errors import RedisUnavailableError
from conveyor.redis import open_redis
from tests.chaos.conftest import Chaos
from tests.support.sentinel import MASTER_NAME, SentinelSetup

SENTINEL_PASSWORD = "sentinel-secret"
#: A request that takes longer than this counts as a hang.
HANG_S = 10.0


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"), sentinel_password=SENTINEL_PASSWORD)
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture
def world(chaos: Chaos, sentinels: SentinelSetup) -> Chaos:
    chaos.redis_url = sentinels.url
    chaos.queue = f"q-{uuid.uuid4().hex[:8]}"
    return chaos


def cli(world: Chaos, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = world.env(CONVEYOR_REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_works_through_the_sentinels(
    world: Chaos,
) -> None:
    produced = cli(world, "produce", "-n", "5", "--rate", "0", "--duration-ms", "0")
    assert produced.returncode == 0, produced.stderr
    stats = cli(world, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    (queue,) = json.loads(stats.stdout)["queues"]
    assert (queue["name"], queue["counts"]["waiting"]) == (world.queue, 5)
    cleanup = cli(world, "cleanup", "--once", "--older-than", "7d", "--dry-run")
    assert cleanup.returncode == 0, cleanup.stderr


@pytest.mark.parametrize(
    ("password", "master", "problem"),
    [
        ("nope", MASTER_NAME, "refused the credentials: sentinels 127.0.0.1:"),
        (None, MASTER_NAME, "refused the password (none given)"),
        (SENTINEL_PASSWORD, "no-such-master", "no master named 'no-such-master' is up"),
    ],
)
async def test_a_wrong_sentinel_password_or_master_name_is_one_clear_error(
    sentinels: SentinelSetup, password: str | None, master: str, problem: str
) -> None:
    url = sentinels.url.replace(MASTER_NAME, master)
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError) as caught:
        await open_redis(
            url,
            wait_s=1,
            timeout_s=1,
            eviction=EvictionCheck.REFUSE,
            sentinel_password=password,
        )
    assert problem in str(caught.value)
    assert SENTINEL_PASSWORD not in str(caught.value)
    assert time.monotonic() - started < 5
