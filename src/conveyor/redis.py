"""Redis connections: one factory, bounded waiting at start-up, and the eviction-policy check."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    RedisError,
    TimeoutError,
)

from conveyor.config import EvictionCheck
from conveyor.errors import ConfigurationError, RedisPolicyError, RedisUnavailableError
from conveyor.resp import RespConnection

log = logging.getLogger("conveyor.redis")

#: How long one connection attempt may take before it counts as a failure.
CONNECT_TIMEOUT_S = 2.0


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
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


class AutoPipeline:
    """Sends the script calls made in the same event-loop tick as one pipeline.

    Many jobs finishing at once each make one script call; sent one by one they cost a round
    trip, a connection and a syscall each. Here, calls queue up while one batch is in flight
    and go together in the next: one write, one read, on one lean connection
    (``conveyor.resp``). A lone call still goes out at the end of the current tick, so an idle
    worker adds no latency. Not transactional: each call succeeds or fails on its own.
    """

    def __init__(self, connection: RespConnection) -> None:
        self.connection = connection
        self._pending: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        self._flushing = False

    def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        task.add_done_callback(_consume_exception)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._flushing = False

    async def _send(
        self, batch: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]]
    ) -> None:
        commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args, _ in batch]
        try:
            results = await self.connection.execute_many(commands)
        except BaseException as exc:  # the connection failed: so did every call in the batch
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        retry: list[tuple[AsyncScript, list[Any], list[Any], asyncio.Future[Any]]] = []
        for item, result in zip(batch, results, strict=True):
            future = item[3]
            if future.done():
                continue
            if isinstance(result, NoScriptError):
                retry.append(item)
            elif isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
        if retry:  # Redis restarted or was flushed: load the scripts, then send those again
            scripts = {s.sha: s for s, *_ in retry}.values()
            try:
                await self.connection.execute_many([("SCRIPT", "LOAD", s.script) for s in scripts])
            except BaseException as exc:
                for *_, future in retry:
                    if not future.done():
                        future.set_exception(exc)
                raise
            await self._send(retry)


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
