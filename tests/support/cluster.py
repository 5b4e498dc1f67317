"""A real Redis Cluster on loopback: 3 masters and 3 replicas, each its own redis-server.

Node ports are at most 55535 (the cluster bus listens on the port + 10000). With
``cluster-node-timeout 1000`` a replica takes over a killed master in about 2-5 s here, and
``cluster-require-full-coverage no`` keeps the other shards serving while one has no master
(Redis's default stops the whole cluster then). ``start()`` returns once every node reports
``cluster_state:ok`` and every master has its replica, so a test can kill a master at once
and get a failover.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from conveyor.embedded import RedisServer
from conveyor.hashtag import slot_of
from conveyor.ports import bind_error, free_port
from conveyor.testing import wait_for_sync

MASTERS = 3
NODE_TIMEOUT_MS = 1000
#: The highest node port: its bus port (+10000) must be a port too.
MAX_NODE_PORT = 55535


def cluster_port(taken: set[int]) -> int:
    """A free port at most 55535 whose bus port (+10000) is free as well."""
    for _ in range(1000):
        port = free_port()
        fits = port <= MAX_NODE_PORT and not {port, port + 10000} & taken
        if fits and bind_error("127.0.0.1", port + 10000) is None:
            return port
    raise AssertionError("no free port pair for a cluster node")


@dataclass
class ClusterSetup:
    tmp: Path
    masters_count: int = MASTERS
    #: Replicas of each master.
    replicas: int = 1
    #: AOF with fsync always (off: no persistence, for benchmarks).
    aof: bool = True
    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers[: self.masters_count])
        return f"redis+cluster://{hosts}"

    def start(self) -> ClusterSetup:
        taken: set[int] = set()
        for index in range(self.masters_count * (1 + self.replicas)):
            port = cluster_port(taken)
            taken |= {port, port + 10000}
            self.servers.append(
                RedisServer(
                    self.tmp / f"node-{index}",
                    port=port,
                    appendfsync="always",
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(NODE_TIMEOUT_MS),
                        # A shard without a master must not stop the others (docs/scaling.md).
                        "--cluster-require-full-coverage",
                        "no",
                        *(() if self.aof else ("--appendonly", "no")),
                    ],
                ).start()
            )
        nodes = [f"127.0.0.1:{s.port}" for s in self.servers]
        create = ["redis-cli", "--cluster", "create", *nodes]
        create += ["--cluster-replicas", str(self.replicas)]
        subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=60)
        wait_for_sync(self._ready, 30, message="the cluster never became ready")
        return self

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2)

    def _ready(self) -> bool:
        try:
            for server in self.servers:
                with self.client(server.port) as node:
                    if "cluster_state:ok" not in node.execute_command("CLUSTER", "INFO"):
                        return False
            masters = self.masters()
        except redis.RedisError:
            return False
        return len(masters) == self.masters_count and all(
            len(replicas) == self.replicas for _, replicas in masters.values()
        )

    def masters(self) -> dict[int, tuple[tuple[int, int], list[int]]]:
        """master port -> (its slot range, its replicas' ports), as a live node says."""
        for server in self.servers:
            try:
                with self.client(server.port) as node:
                    slots = node.execute_command("CLUSTER", "SLOTS")
            except (redis.RedisError, OSError):
                continue
            return {
                int(entry[2][1]): ((int(entry[0]), int(entry[1])), [int(r[1]) for r in entry[3:]])
                for entry in slots
            }
        raise AssertionError("no cluster node answers")

    def master_of(self, key: str) -> int:
        slot = slot_of(key)
        for port, ((first, last), _) in self.masters().items():
            if first <= slot <= last:
                return port
        raise AssertionError(f"no master owns slot {slot}")

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def wait_failover(self, old_port: int, key: str, timeout: float = 30) -> int:
        """Wait until another node is master of ``key``'s slot and says so; its port."""

        def promoted() -> int | None:
            try:
                port = self.master_of(key)
                if port == old_port:
                    return None
                with self.client(port) as node:
                    return port if node.role()[0] == "master" else None
            except (redis.RedisError, OSError, AssertionError):
                return None

        port = wait_for_sync(promoted, timeout, message="no replica took over")
        assert port is not None
        return port

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def tags_on_two_masters(cluster: ClusterSetup, stem: str) -> tuple[str, str]:
    """Two hash tags (``{stem-…}``) whose slots belong to two different masters."""
    masters = cluster.masters()
    found: dict[int, str] = {}
    for index in range(1000):
        tag = f"{{{stem}-{index}}}"
        slot = slot_of(tag)
        owner = next(p for p, ((a, b), _) in masters.items() if a <= slot <= b)
        found.setdefault(owner, tag)
        if len(found) == 2:
            first, second = found.values()
            return first, second
    raise AssertionError("no two tags on two masters")
