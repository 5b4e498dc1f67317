"""Redis connections: one factory, bounded waiting at start-up, and the eviction-policy check."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    OutOfMemoryError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from conveyor.config import EvictionCheck
from conveyor.errors import ConfigurationError, RedisPolicyError, RedisUnavailableError
from conveyor.resp import RespConnection, collect, ignore_reply

log = logging.getLogger("conveyor.redis")

#: How long one connection attempt may take before it counts as a failure.
CONNECT_TIMEOUT_S = 2.0


#: What Redis answers a write when ``maxmemory`` is reached under ``noeviction`` (also inside
#: a script's error or a pipeline's: those come back as a plain ResponseError).
OOM_REPLY = "OOM command not allowed"


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from) is Redis refusing a write: it is full."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OutOfMemoryError):
            return True
        if isinstance(exc, ResponseError) and OOM_REPLY in str(exc):
            return True
        exc = exc.__cause__
        seen += 1
    return False


def memory_full(info: dict[str, Any]) -> str | None:
    """From ``INFO memory``: why Redis refuses writes now (maxmemory reached), or None."""
    limit = int(info.get("maxmemory", 0) or 0)
    if not limit:
        return None
    used = int(info.get("used_memory", 0)) - int(info.get("mem_not_counted_for_evict", 0))
    if used <= limit:
        return None
    policy = info.get("maxmemory_policy", "noeviction")
    return f"Redis is full: {used} bytes used of maxmemory {limit} ({policy}); writes are refused"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    hostport = parts.netloc.rpartition("@")[2]  # as written: a malformed port must not raise
    netloc = f"{user}:***@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect(
    url: str, *, timeout_s: float = 5.0, max_connections: int | None = None, **extra: Any
) -> Redis:
    """A Redis client for ``url`` (RESP2, decoded strings, a few quick retries on blips).

    Nothing is sent until the first command; use ``wait_until_ready`` to check the server.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from exc
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"invalid Redis URL {redact_url(url)!r}: use redis://, rediss:// or unix://"
        )
    try:
        return Redis.from_url(
            url,
            decode_responses=True,
            protocol=2,
            socket_timeout=timeout_s,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
            retry_on_error=[ConnectionError, TimeoutError],
            health_check_interval=30,
            max_connections=max_connections,
            **extra,
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from exc


async def wait_until_ready(client: Redis, url: str, wait_s: float) -> None:
    """PING until Redis answers, for at most ``wait_s`` seconds, else RedisUnavailableError."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            await client.ping()
            return
        except AuthenticationError as exc:
            raise RedisUnavailableError(
                f"Redis at {redact_url(url)} refused the credentials: {exc}"
            ) from exc
        except (RedisError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise RedisUnavailableError(
                    f"Redis at {redact_url(url)} did not answer within {wait_s:g} s: {exc}"
                ) from exc
            log.info("redis_waiting", extra={"fields": {"url": redact_url(url), "error": str(exc)}})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def check_eviction_policy(client: Redis, mode: EvictionCheck) -> str:
    """BullMQ needs ``maxmemory-policy noeviction``: refuse or warn loudly otherwise."""
    info = await client.info("memory")
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        message = (
            f"Redis maxmemory-policy is {policy!r}; jobs can be evicted and lost. "
            "Set it to 'noeviction' (CONFIG SET maxmemory-policy noeviction)"
        )
        if mode is EvictionCheck.REFUSE:
            raise RedisPolicyError(message + " or set CONVEYOR_EVICTION_CHECK=warn.")
        log.warning("redis_eviction_policy", extra={"fields": {"policy": policy}})
    return policy


async def open_redis(
    url: str, *, wait_s: float, timeout_s: float, eviction: EvictionCheck, **extra: Any
) -> Redis:
    """Connect, wait for Redis to answer and check its eviction policy."""
    client = connect(url, timeout_s=timeout_s, **extra)
    try:
        await wait_until_ready(client, url, wait_s)
        await check_eviction_policy(client, eviction)
    except BaseException:
        await client.aclose()
        raise
    return client


#: A batch goes out as soon as it has this many calls instead of at the end of the tick. When
#: all replies of a batch come back together, the jobs they wake would otherwise all make
#: their next call in the same tick and the whole worker would move in lockstep with Redis,
#: each idle while the other works. Small batches keep both busy (measured: 10,300 -> 20,100
#: no-op jobs/s at concurrency 10, same Redis CPU per job; see bench/profile.py).
EAGER_BATCH = 4


class AutoPipeline:
    """Sends the script calls made in the same event-loop tick as one write, pipelined.

    Many jobs finishing at once each make one script call; sent one by one they cost a round
    trip and a syscall each. Here the calls of one tick go out together at the end of the tick
    on one lean connection (``conveyor.resp``) without waiting for the replies of earlier
    batches, so Redis works on one batch while the worker handles the last one. A lone call
    still goes out at the end of the current tick: an idle worker adds no latency. Not
    transactional: each call succeeds or fails on its own.
    """

    def __init__(self, connection: RespConnection) -> None:
        self.connection = connection
        #: Script calls (script, keys, args, future) and raw command runs (None, commands,
        #: [], future) waiting for the end of the tick.
        self._pending: list[_Item] = []
        self._scheduled = False
        self._connecting = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or use from a new event loop after the last one finished: whatever was
        pending or scheduled belonged to the dead loop."""
        self._loop = loop
        self._pending = []
        self._scheduled = False
        self._connecting = False
        self.connection.adopt_loop(loop)

    def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        return self._queue((script, keys, args, future), loop)

    def commands(self, commands: list[tuple[Any, ...]]) -> asyncio.Future[Any]:
        """Send ``commands`` back to back in the next batch; answers all their replies (an
        error reply as an instance). A failed connection fails the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not commands:
            future.set_result([])
            return future
        return self._queue((None, commands, [], future), loop)

    def _queue(self, item: _Item, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        future = item[3]
        if loop is not self._loop:
            self._adopt(loop)
        self._pending.append(item)
        if len(self._pending) >= EAGER_BATCH and not self._connecting and self.connection.connected:
            batch, self._pending = self._pending, []
            self._send(batch)
            return future
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if self._connecting or not self._pending:
            return  # the connecting task sends what is pending once connected
        if not self.connection.connected:
            self._connecting = True
            task = asyncio.ensure_future(self._connect_then_flush())
            task.add_done_callback(_consume_exception)
            return
        batch, self._pending = self._pending, []
        self._send(batch)

    async def _connect_then_flush(self) -> None:
        try:
            await self.connection.connect()
        except BaseException as exc:
            batch, self._pending = self._pending, []
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._connecting = False
        batch, self._pending = self._pending, []
        if batch:
            self._send(batch)

    def _send(self, batch: list[_Item]) -> None:
        chunks: list[bytes] = []
        callbacks: list[Callable[[Any], None]] = []
        sent: list[_Item] = []
        for item in batch:
            script, keys, args, future = item
            try:
                if script is None:
                    packed = [hiredis.pack_command(tuple(c)) for c in keys]
                else:
                    packed = [hiredis.pack_command(_evalsha(script, keys, args))]
            except Exception as exc:  # e.g. a None or a lone surrogate: only this call fails
                if not future.done():
                    future.set_exception(exc)
                continue
            chunks += packed
            if script is None:
                callbacks += collect(len(packed), future)
            else:
                callbacks.append(self._on_reply(item, first_try=True))
            sent.append(item)
        if not chunks:
            return
        try:
            self.connection.send_packed(chunks, callbacks)
        except Exception as exc:
            for *_, future in sent:
                if not future.done():
                    future.set_exception(exc)

    async def transaction(
        self, calls: list[tuple[AsyncScript, list[Any], list[Any]]], *, by_sha: int = 0
    ) -> list[Any]:
        """Run script calls in one MULTI/EXEC, written in one piece on the hot connection;
        answers EXEC's replies (an error reply as an instance, not raised).

        The first ``by_sha`` calls (at most 1) go by EVALSHA, the rest by EVAL with the
        script's text (never NOSCRIPT: put there the calls that check what the first one did).
        When Redis forgot the EVALSHA script, it is loaded and the transaction runs again; with
        two EVALSHA calls the first could run twice (Redis runs the rest of a MULTI after a
        NOSCRIPT), hence the limit.
        """
        if by_sha > 1:
            raise ValueError("transaction: at most one call by EVALSHA")
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        for index, (script, keys, args) in enumerate(calls):
            if index < by_sha:
                commands.append(_evalsha(script, keys, args))
            else:
                commands.append(("EVAL", script.script, len(keys), *keys, *args))
        commands.append(("EXEC",))
        for attempt in (1, 2):
            replies = await self.commands(commands)
            for reply in replies[:-1]:
                if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                    raise reply  # refused while queueing: EXEC discards the transaction
            result = replies[-1]
            if isinstance(result, Exception):
                raise result
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in result):
                await self.commands(
                    [("SCRIPT", "LOAD", script.script) for script, *_ in calls[:by_sha]]
                )
                continue
            return list(result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_reply(self, item: _Item, *, first_try: bool) -> Callable[[Any], None]:
        future = item[3]

        def done(reply: Any) -> None:
            if future.done():
                return
            if isinstance(reply, NoScriptError) and first_try:
                # Redis restarted or was flushed: load the script and call it again, in the same
                # write (Redis runs them in order).
                script, keys, args, _ = item
                assert script is not None
                self.connection.send(
                    [("SCRIPT", "LOAD", script.script), _evalsha(script, keys, args)],
                    [ignore_reply, self._on_reply(item, first_try=False)],
                )
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

        return done


_Item = tuple[AsyncScript | None, list[Any], list[Any], asyncio.Future[Any]]


def _evalsha(script: AsyncScript, keys: list[Any], args: list[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
