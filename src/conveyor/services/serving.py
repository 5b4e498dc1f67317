"""How the API and the monitor are served: uvicorn with bounds on what a client may hold open.

uvicorn alone waits for ever on a client that sends its headers or its body slowly, accepts
connections until the process runs out of file descriptors, closes a ``Connection: close``
request whose body it did not read (the kernel then resets the connection, so the client never
sees the 413 it was sent), and answers malformed HTTP in ``text/plain``. ``GuardedProtocol``
(uvicorn's httptools protocol with a few overrides) adds:

- a header deadline from the connection's first byte (or each request's first byte);
- a body deadline from the end of the headers to the end of the body;
- a cap on open connections: beyond it a new connection is answered 503 and closed;
- a lingering close: an answer given before the body has arrived is sent, the rest of the body
  read and dropped (bounded in time and bytes), and only then the connection closed;
- problem+json for malformed HTTP (400), a timeout (408) and the cap (503).

The idle (keep-alive) timeout is uvicorn's own ``timeout_keep_alive``.

:func:`serve` runs one server in the foreground without uvicorn's re-raise of the SIGTERM or
SIGINT it handled: that re-raise killed the process (exit 143 in a container) before the
caller's context managers ran, so an embedded Redis the service had started ran on, orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conveyor.config import Settings
from conveyor.log import get_logger
from conveyor.services.heap import FreezeHeapAfterStartup
from conveyor.services.problems import (
    MALFORMED_REQUEST,
    PROBLEM_MEDIA_TYPE,
    REQUEST_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    ProblemType,
)

log = get_logger("conveyor.http")

#: Longest time, and most bytes, read and dropped after an early answer before closing.
LINGER_S = 5.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
#: How long a connection over the cap may take to read its 503 before it is closed.
REFUSED_LINGER_S = 1.0
#: Descriptors kept free beyond the connection cap: Redis connections, logs, the listener.
FD_HEADROOM = 128


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold (seconds; connections per server process)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            keep_alive_s=settings.http_keep_alive_s,
            max_connections=settings.http_max_connections,
        )


def problem_bytes(kind: ProblemType, reason: bytes, detail: str, **headers: str) -> bytes:
    """A whole HTTP/1.1 problem+json response that closes the connection."""
    body = orjson.dumps(
        {"type": kind.uri, "title": kind.title, "status": kind.status, "detail": detail}
    )
    lines = [
        b"HTTP/1.1 %d %s" % (kind.status, reason),
        b"content-type: " + PROBLEM_MEDIA_TYPE.encode(),
        b"content-length: %d" % len(body),
        b"connection: close",
        *(f"{name}: {value}".encode("latin-1") for name, value in headers.items()),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a connection cap and a lingering close."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: ConnectionLimits = getattr(config, "limits", ConnectionLimits())
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # headers, body, linger or refused; None: no deadline
        self._due = 0.0
        self._body_pending = False  # between a request's headers and the end of its body
        self._lingering = False
        self._refused = False
        self._dropped = 0

    # --- deadlines -------------------------------------------------------------------------
    # One timer per connection, moved lazily: arming a phase only records its due time (a
    # request costs two attribute writes, not two timers); the timer, when it fires early,
    # re-arms itself for the current phase's due time, and drops itself when none is running.
    def _arm(self, seconds: float, phase: str) -> None:
        self._phase = phase
        self._due = self.loop.time() + seconds
        timer = self._timer
        if timer is not None and timer.when() > self._due:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self.loop.call_at(self._due, self._tick)

    def _disarm(self) -> None:
        self._phase = None

    def _tick(self) -> None:
        self._timer = None
        phase = self._phase
        if phase is None:
            return
        if self.loop.time() < self._due:
            self._timer = self.loop.call_at(self._due, self._tick)
            return
        self._expired(phase)

    def _expired(self, phase: str) -> None:
        self._phase = None
        if self.transport is None or self.transport.is_closing():
            return
        if phase in ("linger", "refused"):
            self.transport.close()
            return
        cycle = self.cycle
        if phase == "headers" and self.scope is None:
            self.transport.close()  # nothing was sent at all: just close the idle socket
            return
        if phase == "headers":  # no cycle of its own yet; answer unless one is mid-response
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is not None and not cycle.response_started
        if can_answer:
            seconds = (
                self.limits.header_timeout_s if phase == "headers" else self.limits.body_timeout_s
            )
            self.transport.write(
                problem_bytes(
                    REQUEST_TIMEOUT,
                    b"Request Timeout",
                    f"the request's {phase} did not arrive within {seconds:g} s",
                )
            )
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        log.info("http_request_timeout", phase=phase)
        self.transport.close()

    # --- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse()
            return
        self._arm(self.limits.header_timeout_s, "headers")

    def _refuse(self) -> None:
        self._refused = True
        self.transport.write(
            problem_bytes(
                TOO_MANY_CONNECTIONS,
                b"Service Unavailable",
                f"this server holds {self.limits.max_connections} connections already",
                **{"retry-after": "1"},
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(REFUSED_LINGER_S, "refused")

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered 503 already; the request is not read
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.close()
                return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP: a problem+json 400 instead of uvicorn's text/plain."""
        self._disarm()
        self.transport.write(problem_bytes(MALFORMED_REQUEST, b"Bad Request", msg))
        self.transport.close()

    # --- requests --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None and not self._lingering:
            self._arm(self.limits.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        if self._lingering:
            return  # a request after the one being dropped is not served
        self._body_pending = True
        self._arm(self.limits.body_timeout_s, "body")
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            cycle.transport = _LingeringClose(self.transport, self, cycle)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._body_pending = False
        if self._lingering:
            self.transport.close()
            return
        self._disarm()
        super().on_message_complete()

    def close_after_body(self) -> None:
        """Close once the rest of the body is read and dropped (bounded), so the client,
        which is still sending, reads the answer instead of a connection reset."""
        if not self._body_pending or self._lingering or self.transport.is_closing():
            self.transport.close()
            return
        self._lingering = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(min(LINGER_S, self.limits.body_timeout_s), "linger")


class _LingeringClose:
    """The transport a request's response cycle writes to: its ``close`` lingers, and the
    head of a response whose body follows (a Content-Length above 0, not HEAD) is held
    until the body's first write, so a small response leaves in one ``send`` system call
    (and one TCP segment) instead of two. Anything else (chunked, empty, HEAD) is written
    at once; a held head goes out before any close."""

    __slots__ = ("_cycle", "_head", "_protocol", "_transport")

    def __init__(
        self, transport: asyncio.Transport, protocol: GuardedProtocol, cycle: Any = None
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        # Weak: the cycle holds this transport, and a cycle of strong references would leave
        # every request's scope and cycle to the garbage collector instead of freeing them.
        self._cycle = None if cycle is None else weakref.ref(cycle)
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        cycle = None if self._cycle is None else self._cycle()
        if (
            cycle is not None
            and not cycle.response_complete
            and cycle.chunked_encoding is False
            and cycle.expected_content_length > 0
            and cycle.scope["method"] != "HEAD"
        ):
            self._head = data  # the head: its body's first write takes it along
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._protocol.close_after_body()

    def __getattr__(self, name: str) -> Any:
        self._flush()
        return getattr(self._transport, name)


class ServingConfig(uvicorn.Config):
    """uvicorn's config with Conveyor's protocol and connection limits (picklable, so it
    reaches the worker processes of ``--workers N``)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(
            app, http=GuardedProtocol, timeout_keep_alive=limits.keep_alive_s, **options
        )
        self.limits = limits

    def load(self) -> None:
        super().load()
        app = self.loaded_app

        def started() -> None:
            # Connections made from now on (uvicorn's protocol reads ``loaded_app`` as each
            # one opens; none is served before start-up) get the app itself.
            self.loaded_app = app

        self.loaded_app = FreezeHeapAfterStartup(app, started)  # conveyor.services.heap


def ensure_descriptors(limits: ConnectionLimits) -> None:
    """Raise this process's soft open-files limit (within the hard one) so that the connection
    cap, not descriptor exhaustion, is what a flood of sockets meets first; warn when the hard
    limit is too low for that. Worker processes started afterwards inherit the limit."""
    needed = limits.max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft < needed:
        log.warning(
            "http_connection_cap_above_fd_limit",
            max_connections=limits.max_connections,
            open_files_limit=soft,
            hint="lower CONVEYOR_HTTP_MAX_CONNECTIONS or raise ulimit -n",
        )


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal it caught once it has shut down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()


def serve(config: uvicorn.Config) -> None:
    """Serve until SIGINT/SIGTERM, then return (exit 0); a server that never started exits 3."""
    ensure_descriptors(getattr(config, "limits", ConnectionLimits()))
    config.load_app()
    server = _Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
