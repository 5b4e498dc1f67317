"""A lean RESP2 connection for the worker's hot path: hiredis packs and parses in C.

redis-py's asyncio client packs every argument in Python and wraps every call in several
layers; for the one or two script calls a job costs, that was a quarter of the worker's CPU.
This connection only sends batches of commands and reads their replies, one batch at a time,
and reconnects after any failure. Errors come out as redis-py's exception classes, so callers
handle them as for any other Redis call.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.errors import ConfigurationError

READ_CHUNK = 65536


def _reply_error(message: str) -> ResponseError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def _ssl_context(kw: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings redis-py took from a rediss:// URL (ssl_ca_certs, ssl_certfile, ...)."""
    context = ssl.create_default_context(
        cafile=kw.get("ssl_ca_certs"), capath=kw.get("ssl_ca_path")
    )
    if kw.get("ssl_certfile"):
        context.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"), kw.get("ssl_password"))
    reqs = kw.get("ssl_cert_reqs", "required")
    if reqs in (None, "none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = bool(kw.get("ssl_check_hostname", False))
    return context


class RespConnection:
    """One connection to Redis at ``url`` that runs command batches in order."""

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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader(encoding="utf-8", replyError=_reply_error)
        self._lock = asyncio.Lock()

    @classmethod
    def like(cls, client: Redis) -> RespConnection:
        """A connection to the same server, database and credentials as a redis-py client."""
        kw = client.connection_pool.connection_kwargs
        conn = cls("redis://localhost", timeout_s=kw.get("socket_timeout") or 5.0)
        conn.host = kw.get("host", "localhost")
        conn.port = int(kw.get("port", 6379))
        conn.db = int(kw.get("db", 0) or 0)
        conn.username = kw.get("username")
        conn.password = kw.get("password")
        connection_class = client.connection_pool.connection_class
        conn.tls = issubclass(connection_class, SSLConnection)
        if conn.tls:
            conn.ssl_context = _ssl_context(kw)
        if issubclass(connection_class, UnixDomainSocketConnection):
            conn.unix_path = kw.get("path")
        return conn

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.unix_path:
                    reader, writer = await asyncio.open_unix_connection(self.unix_path)
                else:
                    context = None
                    if self.tls:
                        context = self.ssl_context or ssl.create_default_context()
                    reader, writer = await asyncio.open_connection(
                        self.host, self.port, ssl=context
                    )
        except TimeoutError as exc:
            raise RedisTimeoutError(
                f"timed out connecting to Redis at {self.host}:{self.port}"
            ) from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self._reader, self._writer = reader, writer
        self._parser = hiredis.Reader(encoding="utf-8", replyError=_reply_error)
        hello: list[Sequence[Any]] = []
        if self.password:
            hello.append(
                ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            )
        if self.db:
            hello.append(("SELECT", self.db))
        if hello:
            for reply in await self._roundtrip(hello):
                if isinstance(reply, ResponseError):
                    await self.close()
                    raise AuthenticationError(str(reply))

    async def _roundtrip(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        assert self._writer is not None
        assert self._reader is not None
        self._writer.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        replies: list[Any] = []
        async with asyncio.timeout(self.timeout_s):
            await self._writer.drain()
            while len(replies) < len(commands):
                reply = self._parser.gets()
                if reply is False:
                    data = await self._reader.read(READ_CHUNK)
                    if not data:
                        raise RedisConnectionError("Redis closed the connection")
                    self._parser.feed(data)
                    continue
                replies.append(reply)
        return replies

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send the commands in one write and answer their replies in order; a reply that is an
        error comes back as a ResponseError instance, not raised."""
        async with self._lock:
            try:
                if self._writer is None:
                    await self._connect()
                return await self._roundtrip(commands)
            except (TimeoutError, RedisTimeoutError) as exc:
                await self.close()
                raise RedisTimeoutError(
                    f"Redis did not answer within {self.timeout_s:g} s"
                ) from exc
            except RedisConnectionError:
                await self.close()
                raise
            except (OSError, asyncio.IncompleteReadError) as exc:
                await self.close()
                raise RedisConnectionError(f"lost the connection to Redis: {exc}") from exc
            except asyncio.CancelledError:
                # A half-read batch leaves the stream out of step: start afresh next time.
                await self.close()
                raise

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
