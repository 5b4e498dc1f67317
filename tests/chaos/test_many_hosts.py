"""Many hosts (issue 15): Redis, the API and three workers each in a network namespace of its
own, joined by veth pairs to a bridge in a "switch" namespace, with addresses of their own.
One worker's link is cut while it runs jobs: the others recover them (its connections stay
open on Redis's side, as for a real partition, so this is lock expiry and BullMQ's stalled
check); when the link returns, the cut-off worker's late results are refused and logged, and
no job is finished twice. The test makes the namespaces and removes them; it needs root and
``ip`` (CI has both)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conveyor.embedded import find_redis_server
from conveyor.redis import connect
from conveyor.testing import wait_for
from tests.chaos.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2's `ip`",
)

SUBNET = "10.77.0"  # private to the test's namespaces: no clash with the host or other tests
HOSTS = {"redis": 1, "api": 2, "client": 3, "w1": 11, "w2": 12, "w3": 13}
KEY = "hosts:executions"
QUEUE, PREFIX = "taskQueue", "hosts"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Hosts:
    """The namespaces ("hosts") of one test, their processes, and the switch between them."""

    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    made: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return f"cv{self.tag}{host}"

    def addr(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS[host]}"

    def build(self) -> None:
        switch = self.ns("sw")
        _ip("netns", "add", switch)
        self.made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for host, number in HOSTS.items():
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.made.append(ns)
            port = f"p{number}"
            _ip(
                "-n",
                ns,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                switch,
            )
            _ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) a host's cable: its port on the switch goes down; nothing is sent
        to either end (no reset, no FIN), as when a link fails."""
        _ip("-n", self.ns("sw"), "link", "set", f"p{HOSTS[host]}", "up" if up else "down")

    def spawn(self, host: str, *command: str, **env: str) -> subprocess.Popen[str]:
        log = open(self.tmp / f"{host}.log", "w+")  # noqa: SIM115
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *command],
            env={**base, "PYTHONPATH": str(REPO), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        proc.log = log  # type: ignore[attr-defined]
        self.procs[host] = proc
        return proc

    def output(self, host: str) -> str:
        return (self.tmp / f"{host}.log").read_text()

    def wait_for_line(self, host: str, marker: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output(host):
            if self.procs[host].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{host}: {marker} never seen:\n{self.output(host)[-3000:]}")
            time.sleep(0.05)

    def client(self, script: str) -> object:
        """Run a Python snippet on the client host; answers the JSON it prints."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns("client"), sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(done.stdout)

    def teardown(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.log.close()  # type: ignore[attr-defined]
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    # A short path: the test reads Redis through a unix socket (not network-namespaced).
    world = Hosts(Path(tempfile.mkdtemp(prefix="cvhosts")))
    try:
        world.build()
        yield world
    finally:
        world.teardown()
        shutil.rmtree(world.tmp, ignore_errors=True)


def _enqueue_script(api: str, count: int, sleep_ms: int) -> str:
    return f"""
import json, urllib.request
ids = []
for _ in range({count}):
    body = json.dumps({{"name": "count", "data": {{"key": "{KEY}", "sleep_ms": {sleep_ms}}}}})
    request = urllib.request.Request(
        "http://{api}:8000/enqueue", data=body.encode(),
        headers={{"content-type": "application/json"}}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        ids.append(json.load(answer)["id"])
print(json.dumps(ids))
"""


def _states_script(api: str, ids: list[str]) -> str:
    return f"""
import json, urllib.request
states = {{}}
for job_id in {ids!r}:
    with urllib.request.urlopen("http://{api}:8000/jobs/" + job_id, timeout=10) as answer:
        states[job_id] = json.load(answer)["state"]
print(json.dumps(states))
"""


async def _holders(redis: Redis, ids: list[str]) -> dict[str, str]:
    tokens = await redis.mget([f"{PREFIX}:{QUEUE}:{job_id}:lock" for job_id in ids])
    return {job_id: str(token) for job_id, token in zip(ids, tokens, strict=True) if token}


async def test_a_cut_off_worker_loses_its_jobs_and_cannot_finish_them(
    hosts: Hosts, report: Callable[..., None]
) -> None:
    socket_path = hosts.tmp / "redis.sock"
    hosts.spawn(
        "redis",
        find_redis_server(),
        *("--bind", hosts.addr("redis"), "--port", "6379", "--protected-mode", "no"),
        *("--unixsocket", str(socket_path), "--unixsocketperm", "700"),
        *("--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"),
    )
    hosts.wait_for_line("redis", "Ready to accept connections")
    redis = connect(f"unix://{socket_path}")
    try:
        env = {
            "CONVEYOR_REDIS_URL": f"redis://{hosts.addr('redis')}:6379",
            "CONVEYOR_QUEUE": QUEUE,
            "CONVEYOR_PREFIX": PREFIX,
            "CONVEYOR_TASKS": "tests.support.tasks",
            "CONVEYOR_DATA_DIR": str(hosts.tmp / "data"),
            # Short locks: a partition is recovered by lock expiry (the heartbeat sees the
            # cut-off worker's connections still open and leaves it alone).
            "CONVEYOR_LOCK_DURATION_MS": "1000",
            "CONVEYOR_STALLED_INTERVAL_MS": "1000",
            # Longer than the cut: the cut-off worker's connections survive it.
            "CONVEYOR_REDIS_TIMEOUT_S": "15",
        }
        cli = [sys.executable, "-m", "conveyor.cli"]
        hosts.spawn("api", *cli, "api", "--host", hosts.addr("api"), "--port", "8000", **env)
        workers = ["w1", "w2", "w3"]
        for host in workers:
            hosts.spawn(host, *cli, "worker", "--concurrency", "4", **env)
        for host in ["api", *workers]:
            hosts.wait_for_line(host, "Uvicorn running" if host == "api" else "worker_started")
        ids = hosts.client(_enqueue_script(hosts.addr("api"), 3, 6000))
        assert isinstance(ids, list)

        async def all_running() -> bool:
            return await redis.hlen(KEY) == len(ids)

        await wait_for(all_running, timeout=20, message="the jobs never started")
        held = await _holders(redis, ids)
        names = [token.rsplit(":", 1)[0] for token in held.values()]
        cut_name = max(set(names), key=names.count)
        cut_host = next(host for host in workers if f"worker={cut_name}" in hosts.output(host))
        lost = [job for job, token in held.items() if token.rsplit(":", 1)[0] == cut_name]
        hosts.link(cut_host, up=False)
        cut_at = time.monotonic()

        async def taken_over() -> bool:
            now = await _holders(redis, lost)
            return len(now) == len(lost) and all(
                not token.startswith(cut_name + ":") for token in now.values()
            )

        await wait_for(taken_over, timeout=20, message="the others never took the jobs")
        takeover_s = time.monotonic() - cut_at
        hosts.link(cut_host, up=True)  # while its handlers still run (6 s jobs)

        async def all_refused() -> bool:
            log = hosts.output(cut_host)
            return all(f"job_lock_lost job_id={job}" in log for job in lost)

        await wait_for(all_refused, timeout=30, message=hosts.output(cut_host)[-3000:])
        states = hosts.client(_states_script(hosts.addr("api"), ids))
        deadline = time.monotonic() + 30
        while states != dict.fromkeys(ids, "completed") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            states = hosts.client(_states_script(hosts.addr("api"), ids))
        assert states == dict.fromkeys(ids, "completed")
        events: list[tuple[str, dict[str, str]]] = await redis.xrange(  # type: ignore[assignment]
            f"{PREFIX}:{QUEUE}:events"
        )
        completions = [f["jobId"] for _, f in events if f.get("event") == "completed"]
        assert sorted(completions) == sorted(ids), "each job is finished exactly once"
        for job in lost:  # finished by the worker that took it over, not the cut-off one
            finisher = await redis.hget(f"{PREFIX}:{QUEUE}:{job}", "pb")
            assert finisher is not None
            assert finisher != cut_name
        # Its connections stayed open on Redis's side: no peer took it for dead.
        for host in workers:
            released = [
                line
                for line in hosts.output(host).splitlines()
                if "dead_worker_jobs_released" in line and "count=0" not in line
            ]
            assert released == [], released
        executions = {job: int(n) for job, n in (await redis.hgetall(KEY)).items()}
        assert executions == {job: 2 if job in lost else 1 for job in ids}
        report(
            jobs=len(ids),
            faults="a worker host's link cut for the takeover, then restored (lock 1 s)",
            recovery_s=round(takeover_s, 2),
            lost=len(ids) - list(states.values()).count("completed"),
            ran_twice=len(lost),
            late_results_refused=len(lost),
            finished_twice=len(completions) - len(set(completions)),
        )
    finally:
        await redis.aclose()
