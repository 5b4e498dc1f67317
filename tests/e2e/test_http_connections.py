"""What a client may hold open: real ``conveyor api`` and ``conveyor monitor`` processes, real
sockets. Slow headers and slow bodies are cut off with a 408, idle sockets closed, connections
beyond the cap answered 503 while open ones keep working, a 413 reaches a client that sends
its whole body first (urllib), and malformed HTTP is answered in problem+json."""

from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.config import Settings
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync

pytestmark = pytest.mark.e2e

CONVEYOR = str(Path(sys.executable).parent / "conveyor")
REPO = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 6
#: Slack for a loaded 2-core machine on top of a deadline.
SLACK_S = 3.0
LIMITS = {
    "CONVEYOR_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "CONVEYOR_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "CONVEYOR_HTTP_KEEP_ALIVE_S": "60",
    "CONVEYOR_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


class Serve:
    """Starts ``conveyor api`` or ``conveyor monitor`` with small limits: ``serve(service)``
    answers its port; ``processes`` holds each port's process."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def __call__(
        self, service: str, preexec: Callable[[], None] | None = None, **limits: str
    ) -> int:
        port = free_port()
        env = {
            **os.environ,
            "CONVEYOR_REDIS_URL": self.redis_url,
            "CONVEYOR_QUEUE": self.settings.queue,
            "CONVEYOR_PREFIX": self.settings.prefix,
            "CONVEYOR_TASKS": "tests.support.api",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **LIMITS,
            **limits,
        }
        proc = subprocess.Popen(
            [CONVEYOR, service, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=subprocess.PIPE,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=preexec,
        )
        self.processes[port] = proc
        wait_for_sync(lambda: _ready(f"http://127.0.0.1:{port}/healthz", proc), timeout=60)
        return port

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stderr:
                proc.stderr.close()


@pytest.fixture
def serve(settings: Settings, redis_url: str) -> Iterator[Serve]:
    servers = Serve(settings, redis_url)
    try:
        yield servers
    finally:
        servers.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + SLACK_S + 5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower(), head
    return status, json.loads(body)


@pytest.mark.parametrize("service", ["api", "monitor"])
def test_slow_headers_get_408_and_idle_sockets_are_closed(serve: Serve, service: str) -> None:
    port = serve(service)
    with _connect(port) as slow:
        started = time.monotonic()
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        status, problem = _problem(_read_all(slow))
        elapsed = time.monotonic() - started
    assert status == 408
    assert problem["type"] == "urn:conveyor:problem:request-timeout"
    assert HEADER_TIMEOUT_S * 0.9 <= elapsed < HEADER_TIMEOUT_S + SLACK_S

    with _connect(port) as idle:
        started = time.monotonic()
        assert _read_all(idle) == b""  # never sent a byte: closed without an answer
    assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S


def test_a_slow_body_is_cut_off_with_408(serve: Serve, settings: Settings) -> None:
    port = serve("api")
    with _connect(port) as slow:
        slow.sendall(
            b"POST /enqueue HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"name": '
        )
        started = time.monotonic()
        status, problem = _problem(_read_all(slow))
    assert status == 408
    assert "body" in str(problem["detail"])
    assert time.monotonic() - started < BODY_TIMEOUT_S + SLACK_S
    queue = httpx.get(f"http://127.0.0.1:{port}/queues/{settings.queue}").json()
    assert queue["total"] == 0


def test_beyond_the_cap_new_connections_get_503_and_open_ones_keep_working(
    serve: Serve,
) -> None:
    port = serve("api")
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    held = []
    for _ in range(MAX_CONNECTIONS):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        held.append(conn)  # keep-alive: each holds its connection open

    with _connect(port) as extra:
        extra.sendall(request)
        status, problem = _problem(_read_all(extra))
    assert status == 503
    assert problem["type"] == "urn:conveyor:problem:too-many-connections"

    for conn in held:  # the open connections are still served
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    held.pop().close()

    def served() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for_sync(served, timeout=10)  # a slot came free
    for conn in held:
        conn.close()


@pytest.mark.parametrize("path", ["/enqueue", "/enqueue/bulk"])
def test_a_413_reaches_urllib_which_sends_the_whole_body_first(
    serve: Serve, settings: Settings, path: str
) -> None:
    port = serve("api")
    body = b'{"name": "echo", "data": {"value": "' + b"x" * 6_000_000 + b'"}}'
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 413
    assert json.loads(info.value.read())["type"] == "urn:conveyor:problem:body-too-large"

    # Chunked, with no length announced: refused while it streams, still answered.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        path,
        body=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        headers={"Content-Type": "application/json", "Connection": "close"},
        encode_chunked=True,
    )
    assert conn.getresponse().status == 413
    conn.close()
    queue = httpx.get(f"http://127.0.0.1:{port}/queues/{settings.queue}").json()
    assert queue["total"] == 0


@pytest.mark.parametrize("service", ["api", "monitor"])
def test_malformed_http_is_answered_in_problem_json(serve: Serve, service: str) -> None:
    port = serve(service)
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n"):
        with _connect(port) as sock:
            sock.sendall(raw)
            status, problem = _problem(_read_all(sock))
        assert status == 400
        assert problem["type"] == "urn:conveyor:problem:malformed-request"


def test_an_idle_keep_alive_connection_is_closed(serve: Serve) -> None:
    port = serve("api", CONVEYOR_HTTP_KEEP_ALIVE_S="1")
    with _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        started = time.monotonic()
        answer = _read_all(sock)  # the answer, then the server closes the idle connection
        assert answer.startswith(b"HTTP/1.1 200")
        assert 0.9 <= time.monotonic() - started < 1 + SLACK_S


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


def _limit_open_files(soft: int, hard: int | None = None) -> Callable[[], None]:
    def apply() -> None:
        current = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard or current))

    return apply


def test_the_open_files_limit_is_raised_to_fit_the_connection_cap(serve: Serve) -> None:
    """A soft limit of 256 would run out long before 1000 connections."""
    port = serve("api", _limit_open_files(256), CONVEYOR_HTTP_MAX_CONNECTIONS="1000")
    soft, _ = _open_files_limit(serve.processes[port].pid)
    assert soft >= 1000


def test_a_hard_limit_below_the_cap_is_a_warning(serve: Serve) -> None:
    port = serve("monitor", _limit_open_files(256, 512), CONVEYOR_HTTP_MAX_CONNECTIONS="1000")
    proc = serve.processes[port]
    assert _open_files_limit(proc.pid) == (512, 512)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    assert "http_connection_cap_above_fd_limit" in proc.stderr.read().decode()
