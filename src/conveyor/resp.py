"""A lean, pipelined RESP2 connection for the worker's hot path: hiredis packs and parses in C.

redis-py's asyncio client packs every argument in Python and wraps every call in several
layers; for the one or two script calls a job costs, that was a quarter of the worker's CPU.
This connection writes commands as soon as they are sent, without waiting for the replies of
earlier ones (Redis answers in order), and hands each reply to its callback the moment it is
parsed. So Redis runs one batch while the worker handles the replies of the previous one:
with one batch in flight at a time the two took turns and neither was ever busy.

Errors come out as redis-py's exception classes, so callers handle them as for any other Redis
call. A lost connection fails every command in flight; the next send connects again.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.errors import ConfigurationError
from conveyor.log import get_logger
from conveyor.redis_address import AddressResolver, FixedAddress, tls_context


class ScriptKeys(list[str]):
    """The keys of calls to one script that are made again and again with the same keys (every
    add of a queue): ``EVALSHA``, the sha, the key count and the keys are packed once, and a
    call packs only its arguments (``pack_evalsha``)."""

    __slots__ = ("_heads", "_words", "sha")

    def __init__(self, sha: str, keys: Sequence[str]) -> None:
        super().__init__(keys)
        #: The script these keys were packed for.
        self.sha = sha
        packed = hiredis.pack_command(("EVALSHA", sha, len(keys), *keys))  # type: ignore[arg-type]
        self._words = packed[packed.index(b"\n") + 1 :]  # without the "*{count}" line
        self._heads: dict[int, bytes] = {}

    def head(self, arg_count: int) -> bytes:
        """The packed start of an EVALSHA with these keys and ``arg_count`` arguments."""
        head = self._heads.get(arg_count)
        if head is None:
            head = b"*%d\r\n%b" % (3 + len(self) + arg_count, self._words)
            self._heads[arg_count] = head
        return head


def pack_evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` packed as ``hiredis.pack_command`` packs it; with
    ``ScriptKeys`` made for ``sha``, only ``args`` are packed here (less than half the work
    for an add's 9 keys and 4 arguments). Raises as pack_command does for an argument it
    cannot pack (a None, a lone surrogate)."""
    if type(keys) is ScriptKeys and keys.sha == sha:
        words: bytes = hiredis.pack_command(tuple(args))
        return keys.head(len(args)) + words[words.index(b"\n") + 1 :]
    whole: bytes = hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))
    return whole


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class DemotedError(RedisConnectionError):
    """A write answered READONLY: the server is a replica now (a failover demoted it); or a
    cluster node answered MOVED, ASK, CLUSTERDOWN or TRYAGAIN: the queue's slot is served
    elsewhere, or not right now. The connection is dropped with it, so the next command
    connects to where the resolver says the master (of the slot) is."""


#: A Redis Cluster's replies that mean "not here (now)" for a queue's slot.
MOVED_REPLIES = ("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN")


#: Called with a command's reply: the value, a ResponseError instance for an error reply, or a
#: ConnectionError/TimeoutError instance when the connection failed before the reply came.
ReplyCallback = Callable[[Any], None]

log = get_logger("conveyor.redis")


#: A command: its words (``("GET", key)``), or the bytes ``hiredis.pack_command`` made of them
#: (e.g. by ``pack_evalsha``).
Command = Sequence[Any] | bytes


def packed(command: Command) -> bytes:
    """``command`` packed for the wire (bytes are packed already)."""
    if type(command) is bytes:
        return command
    words: bytes = hiredis.pack_command(tuple(command))
    return words


def ignore_reply(reply: Any) -> None:
    """A callback for a reply nobody needs (a SCRIPT LOAD before its EVALSHA, a CLIENT
    UNBLOCK): a failure shows up elsewhere."""


def _deliver(callback: ReplyCallback, reply: Any) -> None:
    try:
        callback(reply)
    except Exception:  # a caller's bug must not cost the replies behind it
        log.exception("redis_reply_callback_failed")


def collect(count: int, future: asyncio.Future[Any]) -> list[ReplyCallback]:
    """Callbacks for a run of ``count`` (>= 1) replies: the last one answers them all as a list
    (an error reply as an instance), or raises the connection's failure into ``future``."""
    replies: list[Any] = []

    def one(reply: Any) -> None:
        replies.append(reply)

    def last(reply: Any) -> None:
        replies.append(reply)
        if future.done():
            return
        for item in replies:
            if isinstance(item, RedisConnectionError | RedisTimeoutError):
                future.set_exception(item)
                return
        future.set_result(replies)

    return [*([one] * (count - 1)), last]


def _role(reply: Any) -> str:
    """The role a ROLE reply names (``master``, ``slave``, ``sentinel``)."""
    if isinstance(reply, list) and reply and isinstance(reply[0], str):
        return reply[0]
    return "server of unknown role"


class _Protocol(asyncio.Protocol):
    """Parses replies as bytes arrive and pairs them with the callbacks, in order."""

    def __init__(self, owner: RespConnection) -> None:
        self.owner = owner
        # Bytes that are not UTF-8 come out as U+FFFD instead of an exception that would drop
        # every command in flight (the job they belong to then fails its validation).
        self.parser = hiredis.Reader(
            encoding="utf-8", errors="replace", replyError=self._reply_error
        )
        #: A READONLY reply came: the connection is dropped once the replies read are handed out.
        self.demoted: DemotedError | None = None
        self.waiting: deque[tuple[ReplyCallback, float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.failure: Exception | None = None

    def _reply_error(self, message: str) -> Exception:
        if message.startswith("READONLY"):
            self.demoted = DemotedError(f"{message} (a failover demoted this server)")
            return self.demoted
        if message.startswith(MOVED_REPLIES):
            self.demoted = DemotedError(f"{message} (the cluster moved this queue's slot)")
            return self.demoted
        return _reply_error(message)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the same methods but do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        waiting = self.waiting
        reply = parser.gets()
        while reply is not False:
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("Redis sent a reply nobody was waiting for"))
                return
            callback, _ = waiting.popleft()
            _deliver(callback, reply)
            reply = parser.gets()
        if self.demoted is not None:
            self.fail(self.demoted)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.failure or RedisConnectionError(
            f"lost the connection to Redis: {exc}" if exc else "Redis closed the connection"
        )
        self.transport = None
        self.owner._lost(self)
        waiting, self.waiting = self.waiting, deque()
        for callback, _ in waiting:
            _deliver(callback, reason)

    def fail(self, reason: Exception) -> None:
        """Drop the connection; every command in flight gets ``reason``. The owner lets go of
        it at once, so a command sent before the loop reports the loss connects afresh."""
        if self.failure is None:
            self.failure = reason
        if self.transport is not None:
            self.transport.abort()
        self.owner._lost(self)


class RespConnection:
    """One pipelined connection to Redis at ``url``."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, connect_timeout_s: float = 2.0) -> None:
        parts = urlsplit(url)
        self.url = url
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.tls = parts.scheme == "rediss"
        self.unix_path = parts.path if parts.scheme == "unix" else None
        self.host = parts.hostname or "localhost"
        try:
            self.port = parts.port or 6379
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}") from exc
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        db_part = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        self.db = int(db_part) if db_part.isdigit() else 0
        self.ssl_context: ssl.SSLContext | None = None
        #: Asked where the server is on every (re)connect (a Sentinel failover moves it).
        self.resolver: AddressResolver = FixedAddress(self.host, self.port)
        self._protocol: _Protocol | None = None
        self._connect_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set on every (re)connect when given (CLIENT SETNAME), e.g. for BullMQ's worker list.
        self.client_name: str | None = None
        #: With ``want_client_id``, Redis's id of the current connection (CLIENT ID), for
        #: CLIENT UNBLOCK from another connection; None while disconnected.
        self.want_client_id = False
        self.client_id: int | None = None
        #: Connections opened so far: a change means the last one was lost in between.
        self.connects = 0

    @classmethod
    def like(cls, client: Redis) -> RespConnection:
        """A connection to the same server, database and credentials as a redis-py client,
        found the same way (its connections' resolver: a Sentinel client's master)."""
        kw = client.connection_pool.connection_kwargs
        conn = cls("redis://localhost", timeout_s=kw.get("socket_timeout") or 5.0)
        conn.host = kw.get("host", "localhost")
        conn.port = int(kw.get("port", 6379))
        conn.resolver = kw.get("resolver") or FixedAddress(conn.host, conn.port)
        conn.db = int(kw.get("db", 0) or 0)
        conn.username = kw.get("username")
        conn.password = kw.get("password")
        connection_class = client.connection_pool.connection_class
        conn.tls = issubclass(connection_class, SSLConnection)
        if conn.tls:
            conn.ssl_context = tls_context(kw)
        if issubclass(connection_class, UnixDomainSocketConnection):
            conn.unix_path = kw.get("path")
        return conn

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.transport is not None

    @property
    def idle(self) -> bool:
        """Connected, with no reply awaited."""
        protocol = self._protocol
        return protocol is not None and protocol.transport is not None and not protocol.waiting

    async def connect(self) -> None:
        """Connect (and authenticate) unless connected already."""
        self.adopt_loop(asyncio.get_running_loop())
        async with self._connect_lock:
            if self.connected:
                return
            await self._open()

    async def _open(self) -> None:
        """Connect to where the resolver says the server is now, then greet it."""
        loop = asyncio.get_running_loop()
        if not self.unix_path:
            address = await self.resolver.resolve()
            self.host, self.port = address.host, address.port
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.unix_path:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), self.unix_path
                    )
                else:
                    context = None
                    if self.tls:
                        context = self.ssl_context or ssl.create_default_context()
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self), self.host, self.port, ssl=context
                    )
        except TimeoutError as exc:
            raise RedisTimeoutError(
                f"timed out connecting to Redis at {self.host}:{self.port}"
            ) from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._protocol = protocol
        self.connects += 1
        await self._greet()

    async def _greet(self) -> None:
        """AUTH and SELECT (refused: AuthenticationError), ROLE when the resolver wants a
        master (a replica: ConnectionError), then CLIENT SETNAME and CLIENT ID."""
        hello: list[Sequence[Any]] = []
        if self.password:
            hello.append(
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
        if self.db:
            hello.append(("SELECT", self.db))
        checked = len(hello)
        check_role = self.resolver.checks_role and not self.unix_path
        if check_role:
            hello.append(("ROLE",))
        if self.client_name:
            hello.append(("CLIENT", "SETNAME", self.client_name))
        if self.want_client_id:
            hello.append(("CLIENT", "ID"))
        if not hello:
            return
        try:
            replies = await self._run(hello)
        except (RedisConnectionError, RedisTimeoutError):
            await self.close()
            raise
        for index, reply in enumerate(replies):
            if isinstance(reply, ResponseError) and index < checked:
                await self.close()
                raise AuthenticationError(str(reply))
            if check_role and index == checked and _role(reply) != "master":
                await self.close()
                raise RedisConnectionError(
                    f"{self.host}:{self.port} is a {_role(reply)} now, not the master"
                )
            if isinstance(reply, ResponseError):  # a name Redis refuses: go on unnamed
                log.warning("redis_client_name_refused", error=str(reply))
        if self.want_client_id and isinstance(replies[-1], int):
            self.client_id = replies[-1]

    def send(self, commands: Sequence[Command], callbacks: Sequence[ReplyCallback]) -> None:
        """Write the commands now (one write) without waiting for earlier replies; each reply
        goes to its callback, in order. Only while ``connected``. A command that cannot be
        packed (a None, a lone surrogate) raises before anything is written."""
        self.send_packed([packed(c) for c in commands], callbacks)

    def send_packed(self, chunks: Sequence[bytes], callbacks: Sequence[ReplyCallback]) -> None:
        """``send`` of commands packed already (hiredis.pack_command), one callback each."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise RedisConnectionError("not connected to Redis")
        protocol.transport.write(b"".join(chunks))
        sent = time.monotonic()
        protocol.waiting.extend([(callback, sent) for callback in callbacks])
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self.timeout_s, self._check_timeout)

    def adopt_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make the connection usable from ``loop``, dropping a connection (and its lock and
        timer) left over from another, finished loop (a client used under two asyncio.run()
        calls in turn). The old socket is abandoned, not closed: its loop is gone."""
        if self._loop is loop:
            return
        self._loop = loop
        self._protocol = None
        self._timer = None
        self.client_id = None
        self._connect_lock = asyncio.Lock()

    def _check_timeout(self) -> None:
        """Give up on a connection whose oldest command has waited ``timeout_s`` for its reply."""
        self._timer = None
        protocol = self._protocol
        if protocol is None or not protocol.waiting:
            return
        oldest = protocol.waiting[0][1]
        waited = time.monotonic() - oldest
        if waited >= self.timeout_s:
            protocol.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout_s:g} s"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self.timeout_s - waited, self._check_timeout)

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self.client_id = None

    async def _run(self, commands: Sequence[Command]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.send(commands, collect(len(commands), future))
        return await future

    async def execute_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send the commands (``Command``: words or packed bytes) in one write and answer their
        replies in order; a reply that is an error comes back as a ResponseError instance, not
        raised. A failed connection raises."""
        self.adopt_loop(asyncio.get_running_loop())
        if not commands:
            return []
        if not self.connected:
            await self.connect()
        return await self._run(commands)

    async def close(self) -> None:
        self.adopt_loop(asyncio.get_running_loop())
        protocol, self._protocol = self._protocol, None
        self.client_id = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if protocol is not None and protocol.transport is not None:
            protocol.fail(RedisConnectionError("the connection was closed"))
            await asyncio.sleep(0)  # connection_lost runs on the next loop iteration
