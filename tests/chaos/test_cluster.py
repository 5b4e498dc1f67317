"""A Redis Cluster of 3 masters and 3 replicas, two queues on two different masters, an API and
a worker process for each. SIGKILL the master of one queue: the other queue never stops, the
first resumes once its replica takes over, and every job an API acknowledged completes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.hashtag import queue_route_key
from conveyor.jobs import JobState
from conveyor.ports import free_port
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos
from tests.support.cluster import ClusterSetup, tags_on_two_masters

PREFIX = "chaos"
#: Enqueues per second and queue while the test runs.
RATE = 40


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path / "cluster")
    try:
        yield setup.start()
    finally:
        setup.stop()


class ClusterChaos(Chaos):
    cluster_url: str = ""

    @property
    def url(self) -> str:
        return self.cluster_url


class Producer:
    """Posts ``simulate`` jobs to one API at a steady rate; keeps what was acknowledged."""

    def __init__(self, port: int) -> None:
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)
        self.acked: list[str] = []
        self.refused: list[float] = []  # when a 503 (or no answer) came
        self.why: list[str] = []  # and what it said
        self.stop = asyncio.Event()

    async def run(self) -> None:
        body = {"name": "simulate", "data": {"duration_ms": 5}}
        while not self.stop.is_set():
            try:
                response = await self.http.post("/enqueue", json=body)
                if response.status_code == 201:
                    self.acked.append(response.json()["id"])
                else:
                    assert response.status_code == 503, response.text
                    self.refused.append(time.monotonic())
                    self.why.append(response.json().get("detail", ""))
            except httpx.TransportError as exc:
                self.refused.append(time.monotonic())
                self.why.append(repr(exc))
            await asyncio.sleep(1 / RATE)
        await self.http.aclose()


async def _listens(port: int) -> bool:
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.TransportError:
            return False


async def completed(client: QueueClient) -> int:
    return (await client.counts()).get(JobState.COMPLETED, 0)


async def test_a_master_dies_and_only_its_queue_waits_for_the_replica(
    cluster: ClusterSetup, tmp_path: Path, report: Callable[..., None]
) -> None:
    hit, spared = tags_on_two_masters(cluster, uuid.uuid4().hex[:6])
    world = ClusterChaos(tmp=tmp_path, prefix=PREFIX)
    world.cluster_url = cluster.url
    clients: dict[str, QueueClient] = {}
    producers: dict[str, Producer] = {}
    try:
        for queue in (hit, spared):
            port = free_port()
            env: dict[str, Any] = {"CONVEYOR_QUEUE": queue, "CONVEYOR_ENQUEUE_REPLICAS": "1"}
            api = world.spawn("api", "--port", str(port), **env)
            worker = world.spawn("worker", "--concurrency", "20", **env)
            world.wait_started(api, "api_ready")
            world.wait_started(worker)
            await wait_for(partial(_listens, port), 10, message="the API listens")
            settings = Settings(redis_url=cluster.url, queue=queue, prefix=PREFIX)
            clients[queue] = QueueClient.from_settings(settings)
            producers[queue] = Producer(port)
        running = [asyncio.create_task(p.run()) for p in producers.values()]
        await asyncio.sleep(2)

        old = cluster.master_of(queue_route_key(PREFIX, hit))
        assert old != cluster.master_of(queue_route_key(PREFIX, spared))
        spared_before = await completed(clients[spared])
        killed_at = time.monotonic()
        cluster.server(old).kill()
        await asyncio.to_thread(cluster.wait_failover, old, queue_route_key(PREFIX, hit))
        failover_s = time.monotonic() - killed_at
        # The other queue went on while the first had no master.
        spared_during = await completed(clients[spared]) - spared_before
        assert spared_during > 0
        # The old master comes back as the new one's replica, so enqueues that wait for a
        # replica (CONVEYOR_ENQUEUE_REPLICAS=1) are acknowledged again.
        cluster.server(old).start()
        hit_after = len(producers[hit].acked)
        await wait_for(
            lambda: len(producers[hit].acked) > hit_after + RATE,
            30,
            message="the queue whose master died takes jobs again",
        )
        for producer in producers.values():
            producer.stop.set()
        await asyncio.gather(*running)

        for queue, producer in producers.items():
            client = clients[queue]

            async def all_done(client: QueueClient = client, producer: Producer = producer) -> bool:
                return await completed(client) >= len(producer.acked)

            await wait_for(all_done, 30, message=f"every acknowledged job of {queue} completes")
            states = {(await client.get_job(job_id)).state for job_id in producer.acked}
            assert states == {JobState.COMPLETED}
        assert not producers[spared].why  # the other queue never refused a job
        refused = producers[hit].refused
        report(
            jobs=len(producers[hit].acked) + len(producers[spared].acked),
            faults="SIGKILL of the master of one of the two queues",
            lost=0,
            recovery_s=round(failover_s, 2),
            acked_hit=len(producers[hit].acked),
            acked_spared=len(producers[spared].acked),
            spared_completed_while_hit_had_no_master=spared_during,
            hit_refusals=len(refused),
            hit_refusal_window_s=round(refused[-1] - refused[0], 2) if refused else 0,
        )
    finally:
        for client in clients.values():
            await client.close()
        world.cleanup()
