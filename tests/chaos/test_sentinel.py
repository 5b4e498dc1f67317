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

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import EvictionCheck, Settings
from conveyor.errors import RedisUnavailableError
from conveyor.jobs import JobState
from conveyor.ports import free_port
from conveyor.redis import open_redis
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos
from tests.support.sentinel import MASTER_NAME, SentinelSetup
from tests.support.tls import certificates

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


async def cli(world: Chaos, *args: str) -> tuple[int, str, str]:
    """Run ``conveyor ARGS`` through the sentinels: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor.cli",
        *args,
        env=world.env(CONVEYOR_REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_works_through_the_sentinels(world: Chaos) -> None:
    code, _, err = await cli(world, "produce", "-n", "5", "--rate", "0", "--duration-ms", "0")
    assert code == 0, err
    (code, out, err), (cleaned, _, cleanup_err) = await asyncio.gather(  # at once: quicker
        cli(world, "stats", "--json"),
        cli(world, "cleanup", "--once", "--older-than", "7d", "--dry-run"),
    )
    assert code == 0, err
    (queue,) = json.loads(out)["queues"]
    assert (queue["name"], queue["counts"]["waiting"]) == (world.queue, 5)
    assert cleaned == 0, cleanup_err


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


class Load:
    """Clients enqueueing one job after another, each under an Idempotency-Key that they
    send again after a 503 until the job is acknowledged (as a careful client does)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = asyncio.Event()
        self.accepted: dict[str, str] = {}  # Idempotency-Key -> job id
        self.statuses: Counter[int] = Counter()
        self.refused_at: list[float] = []  # monotonic times of the 503s
        self.slowest = 0.0

    async def client(self) -> None:
        async with httpx.AsyncClient(base_url=self.base, timeout=HANG_S + 5) as http:
            while not self.stop.is_set():
                key = uuid.uuid4().hex
                while True:  # until this key's job is acknowledged
                    answer = await self._post(http, key)
                    if answer is not None:
                        self.accepted[key] = answer
                        break
                    await asyncio.sleep(0.05)

    async def _post(self, http: httpx.AsyncClient, key: str) -> str | None:
        started = time.monotonic()
        try:
            response = await http.post(
                "/enqueue",
                json={"name": "simulate", "data": {"duration_ms": 20}},
                headers={"Idempotency-Key": key},
            )
        except httpx.TransportError:
            self.statuses[0] += 1
            return None
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.statuses[response.status_code] += 1
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after"), response.headers
        self.refused_at.append(time.monotonic())
        return None


async def watch_monitor(
    base: str, stop: asyncio.Event, seen: Counter[int], slowest: list[float]
) -> None:
    """GET the monitor's overview every 100 ms: 200, or 503 with Retry-After, never a hang."""
    async with httpx.AsyncClient(base_url=base, timeout=HANG_S + 5) as http:
        while not stop.is_set():
            started = time.monotonic()
            response = await http.get("/api/overview")
            slowest[0] = max(slowest[0], time.monotonic() - started)
            seen[response.status_code] += 1
            if response.status_code == 503:
                assert response.headers.get("retry-after"), response.headers
            await asyncio.sleep(0.1)


async def test_a_master_sigkill_under_load_loses_no_acknowledged_job(
    world: Chaos, sentinels: SentinelSetup, report: Callable[..., None]
) -> None:
    api_port, monitor_port = free_port(), free_port()
    env = {
        "CONVEYOR_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "CONVEYOR_ENQUEUE_REPLICAS": "1",
        "CONVEYOR_ENQUEUE_REPLICAS_TIMEOUT_MS": "500",
        "CONVEYOR_API_REDIS_TIMEOUT_S": "1",
    }
    api = world.spawn("api", "--port", str(api_port), **env)
    worker = world.spawn("worker", "--concurrency", "20", **env)
    monitor = world.spawn("monitor", "--port", str(monitor_port), **env)
    world.wait_started(api, "Uvicorn running")
    world.wait_started(worker)
    world.wait_started(monitor, "Uvicorn running")

    load = Load(f"http://127.0.0.1:{api_port}")
    monitor_answers: Counter[int] = Counter()
    monitor_slowest = [0.0]
    tasks = [asyncio.create_task(load.client()) for _ in range(4)]
    tasks.append(
        asyncio.create_task(
            watch_monitor(
                f"http://127.0.0.1:{monitor_port}", load.stop, monitor_answers, monitor_slowest
            )
        )
    )
    await wait_for(lambda: len(load.accepted) >= 50, timeout=30, message="no load")
    before = len(load.accepted)
    killed_port = sentinels.kill_master()
    killed = time.monotonic()
    promoted_port = await asyncio.to_thread(sentinels.wait_failover, killed_port)
    failover_s = time.monotonic() - killed
    # The promoted replica has no replica of its own: with CONVEYOR_ENQUEUE_REPLICAS=1 nothing
    # can be acknowledged until one joins. The operator's part: start the old server again as
    # a replica of the new master (left to themselves, the sentinels would convert it within
    # their 10 s INFO period; that wait is not what this test measures).
    old = sentinels.server(killed_port)
    old.extra_args = ["--replicaof", "127.0.0.1", str(promoted_port)]
    old.start()
    rejoined = time.monotonic()
    await wait_for(lambda: len(load.accepted) > before + 100, timeout=60, message="no recovery")
    recovered_s = time.monotonic() - killed
    load.stop.set()
    await asyncio.gather(*tasks)

    settings = Settings(
        redis_url=world.url,
        redis_sentinel_password=SENTINEL_PASSWORD,
        queue=world.queue,
        prefix=world.prefix,
    )
    ids = list(load.accepted.values())
    async with QueueClient.from_settings(settings) as client:

        async def states() -> Counter[str]:
            return Counter([(await client.get_state(job_id)).value for job_id in ids])

        with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
            await wait_for(
                lambda: states_are_completed(states, len(ids)), timeout=60, message="not done"
            )
        final = await states()
        total = sum((await client.counts()).values())
        records = [await client.find_job(job_id) for job_id in ids]
    # As the promoted master records it: jobs that were running (or whose finish had not
    # replicated) when the master died start again.
    started_twice = sum(1 for r in records if r is not None and r.attempts_started > 1)

    alive = [proc.poll() is None for proc in (api, worker, monitor)]
    assert alive == [True, True, True]  # nothing was restarted: each found the new master
    assert world.output(worker).count("worker_started") == 1
    assert final == Counter({JobState.COMPLETED.value: len(ids)}), final
    assert total == len(ids)  # the retries under their keys added no second job
    assert set(load.statuses) <= {200, 201, 503}, load.statuses
    assert load.statuses[503] > 0  # the window without a master was seen, and answered
    assert load.slowest < HANG_S, load.slowest
    assert set(monitor_answers) <= {200, 503}, monitor_answers
    assert monitor_slowest[0] < HANG_S, monitor_slowest
    refused_without_master = [t - killed for t in load.refused_at if t < killed + failover_s]
    refused_without_replica = [t - killed for t in load.refused_at if t >= killed + failover_s]
    report(
        faults="Sentinel: SIGKILL the master under API + worker load, CONVEYOR_ENQUEUE_REPLICAS=1",
        jobs=len(ids),
        lost=len(ids) - final[JobState.COMPLETED.value],
        answers={str(k): v for k, v in sorted(load.statuses.items())},
        failover_s=round(failover_s, 2),
        refused_without_master=len(refused_without_master),
        refused_without_replica=len(refused_without_replica),
        last_503_s=round(max(load.refused_at) - killed, 2),
        old_master_back_as_replica_s=round(rejoined - killed, 2),
        recovery_s=round(recovered_s, 2),
        ran_twice=started_twice,
        slowest_request_s=round(load.slowest, 2),
        monitor_answers={str(k): v for k, v in sorted(monitor_answers.items())},
        promoted=promoted_port != killed_port,
    )


async def states_are_completed(
    states: Callable[[], Awaitable[Counter[str]]], expected: int
) -> bool:
    return await states() == Counter({JobState.COMPLETED.value: expected})


async def test_rediss_sentinel_speaks_tls_to_the_sentinels_and_the_master(tmp_path: Path) -> None:
    """TLS only (sentinels, master, replication): both connection kinds get through with
    the URL's CA, the lean one (the client's enqueue) and redis-py's (counts, the checks)."""
    setup = SentinelSetup(tmp_path / "setup", tls=certificates(tmp_path / "certs"))
    try:
        setup.start(ready_for_failover=False)  # nothing is killed here
        assert setup.url.startswith("rediss+sentinel://")
        checked = await open_redis(setup.url, wait_s=5, timeout_s=2, eviction=EvictionCheck.REFUSE)
        await checked.aclose()
        settings = Settings(redis_url=setup.url, queue="tls", prefix="tls")
        async with QueueClient.from_settings(settings) as client:
            job_id = await client.enqueue("simulate", {"duration_ms": 0})
            assert await client.get_state(job_id) == JobState.WAITING
            assert (await client.counts())[JobState.WAITING] == 1
    finally:
        setup.stop()
