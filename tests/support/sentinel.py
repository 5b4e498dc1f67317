"""A real Redis Sentinel setup on loopback: a master, one replica, three sentinels.

Each is its own ``redis-server`` process (the sentinels ``redis-server CONF --sentinel``, with
``down-after-milliseconds 1000``: a failover takes about 2-3 s here). ``start()`` returns once
the replica is in sync and every sentinel lists the replica and the two other sentinels, so a
test can kill the master at once and get a failover.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from conveyor.embedded import RedisServer, find_redis_server
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync

MASTER_NAME = "conveyor-master"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000


@dataclass
class SentinelSetup:
    tmp: Path
    #: requirepass of the sentinels (CONVEYOR_REDIS_SENTINEL_PASSWORD), if any.
    sentinel_password: str | None = None
    servers: list[RedisServer] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinel_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelSetup:
        master = RedisServer(self.tmp / "master", port=free_port()).start()
        replica = RedisServer(
            self.tmp / "replica",
            port=free_port(),
            extra_args=["--replicaof", "127.0.0.1", str(master.port)],
        ).start()
        self.servers = [master, replica]
        wait_for_sync(lambda: _in_sync(master.port), 20, message="the replica never synced")
        for index in range(SENTINELS):
            self._start_sentinel(index, master.port)
        for port in self.sentinel_ports:
            wait_for_sync(
                lambda port=port: self._sees_everyone(port),  # type: ignore[misc]
                30,
                message=f"sentinel {port} never listed the replica and its peers",
            )
        return self

    def _start_sentinel(self, index: int, master_port: int) -> None:
        port = free_port()
        folder = self.tmp / f"sentinel-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {folder.resolve()}",
            "logfile sentinel.log",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.sentinel_password:
            lines.append(f"requirepass {self.sentinel_password}")
        conf = folder / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen(
            [find_redis_server(), str(conf), "--sentinel"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.sentinel_ports.append(port)
        self.sentinel_procs.append(proc)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, password=self.sentinel_password, decode_responses=True, socket_timeout=2
        )

    def _sees_everyone(self, port: int) -> bool:
        try:
            with self.sentinel(port) as client:
                master = client.sentinel_master(MASTER_NAME)
                replicas = client.sentinel_slaves(MASTER_NAME)
        except redis.RedisError:
            return False
        return bool(replicas) and int(master.get("num-other-sentinels", 0)) == SENTINELS - 1

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                with self.sentinel(port) as client:
                    _, master_port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return int(master_port)
            except redis.RedisError:
                continue
        raise AssertionError("no sentinel answers")

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def kill_master(self) -> int:
        """SIGKILL the master; answers its port."""
        port = self.master_port()
        self.server(port).kill()
        return port

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until a sentinel names another master that says it is one; answers its port."""

        def promoted() -> int | None:
            port = self.master_port()
            if port == old_port:
                return None
            with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as client:
                return port if client.role()[0] == "master" else None

        port = wait_for_sync(promoted, timeout, message="no failover happened")
        assert port is not None
        return port

    def stop(self) -> None:
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for server in self.servers:
            server.kill()


def _in_sync(master_port: int) -> bool:
    with redis.Redis(port=master_port, decode_responses=True, socket_timeout=2) as client:
        info = client.info("replication")
    return bool(info.get("connected_slaves")) and info.get("slave0", {}).get("state") == "online"
