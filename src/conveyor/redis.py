"""Redis connections: one factory, bounded waiting at start-up, and the eviction-policy check."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from conveyor.backoff import capped_backoff
from conveyor.config import EvictionCheck
from conveyor.errors import ConfigurationError, RedisPolicyError, RedisUnavailableError
from conveyor.hashtag import slot_of
from conveyor.log import get_logger
from conveyor.redis_address import (
    AddressResolver,
    ClusterSlotResolver,
    SentinelResolver,
    tls_context,
)
from conveyor.redis_url import RedisTarget, parse_redis_url

log = get_logger("conveyor.redis")

#: How long one connection attempt may take before it counts as a failure.
CONNECT_TIMEOUT_S = 2.0
#: ``wait_until_ready`` PINGs again after 50 ms, then twice as long each time, up to 1 s.
READY_RETRY_BASE_S = 0.05
READY_RETRY_CAP_S = 1.0


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
    url: str,
    *,
    timeout_s: float = 5.0,
    max_connections: int | None = None,
    sentinel_password: str | None = None,
    route_key: str | None = None,
    **extra: Any,
) -> Redis:
    """A Redis client for ``url`` (RESP2, decoded strings, a few quick retries on blips).

    The one place that turns a URL into connections: a ``redis+sentinel://`` URL gives a client
    whose every connection asks the sentinels where the master is (``conveyor.redis_address``),
    and ``RespConnection.like`` takes the same resolver. ``sentinel_password`` is the
    sentinels' own (CONVEYOR_REDIS_SENTINEL_PASSWORD). A ``redis+cluster://`` URL gives a
    client of the master that owns ``route_key``'s slot (a queue's key base: every key of a
    queue shares its slot, ``conveyor.hashtag``), found again after a failover or a MOVED
    reply; a client serves one queue (slot) only. Nothing is sent until the first command;
    use ``wait_until_ready`` to check the server.
    """
    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "decode_responses": True,
        "protocol": 2,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": 30,
        "max_connections": max_connections,
        **extra,
    }
    if target.uses_sentinel:
        return _sentinel_client(target, sentinel_password, options)
    if target.uses_cluster:
        return _cluster_client(target, route_key, options)
    try:
        return Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from exc


def _tls_options(target: RedisTarget) -> dict[str, Any]:
    tls_options: dict[str, Any] = dict(target.tls_options)
    if "ssl_check_hostname" in tls_options:
        tls_options["ssl_check_hostname"] = tls_options["ssl_check_hostname"].lower() in (
            "1",
            "true",
            "yes",
            "on",
        )
    return tls_options


def _sentinel_client(
    target: RedisTarget, sentinel_password: str | None, options: dict[str, Any]
) -> Redis:
    assert target.master_name is not None
    tls_options = _tls_options(target)
    resolver = SentinelResolver(
        target.sentinels,
        target.master_name,
        password=sentinel_password,
        tls=tls_context(tls_options) if target.tls else None,
    )
    return _resolved_client(target, resolver, tls_options, options)


def _cluster_client(target: RedisTarget, route_key: str | None, options: dict[str, Any]) -> Redis:
    """A client of the master owning ``route_key``'s slot (any key: slot 0's master)."""
    tls_options = _tls_options(target)
    resolver = ClusterSlotResolver(
        target.cluster_nodes,
        slot_of(route_key) if route_key is not None else 0,
        username=target.username,
        password=target.password,
        tls=tls_context(tls_options) if target.tls else None,
    )
    return _resolved_client(target, resolver, tls_options, options)


def _resolved_client(
    target: RedisTarget,
    resolver: AddressResolver,
    tls_options: dict[str, Any],
    options: dict[str, Any],
) -> Redis:
    pool = ConnectionPool(
        connection_class=ResolvedSSLConnection if target.tls else ResolvedConnection,
        resolver=resolver,
        username=target.username,
        password=target.password,
        db=target.db,
        **(tls_options if target.tls else {}),
        **options,
    )
    return Redis.from_pool(pool)


class ResolvedConnection(Connection):
    """A redis-py connection that asks its ``resolver`` where to connect each time it
    connects, checks the server's ROLE when the resolver wants it, and drops itself when the
    server answers READONLY (a master demoted by a failover), so the next command finds the
    new master."""

    def __init__(self, *, resolver: AddressResolver, **kwargs: Any) -> None:
        self.resolver = resolver
        super().__init__(**kwargs)

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected:  # asked here, not in _connect, whose errors redis-py rewraps
            address = await self.resolver.resolve()
            self.host, self.port = address.host, address.port
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health=check_health)
        if self.resolver.checks_role:
            await self.send_command("ROLE", check_health=False)
            role = await self.read_response()
            if not role or role[0] != "master":
                raise ConnectionError(
                    f"{self.host}:{self.port} is a {role[0] if role else 'server'} now, "
                    "not the master"
                )

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ReadOnlyError as exc:
            await self.disconnect()
            raise ConnectionError(
                f"{self.host}:{self.port} became a replica (READONLY); looking for the master"
            ) from exc
        except (MovedError, AskError, ClusterDownError, TryAgainError) as exc:
            # A cluster's slot moved (failover, resharding) or is not served right now.
            await self.disconnect()
            raise ConnectionError(
                f"{self.host}:{self.port} answered {exc.__class__.__name__}: {exc}; "
                "looking for the slot's owner"
            ) from exc


class ResolvedSSLConnection(ResolvedConnection, SSLConnection):
    """``ResolvedConnection`` over TLS."""


async def wait_until_ready(client: Redis, url: str, wait_s: float) -> None:
    """PING until Redis answers, for at most ``wait_s`` seconds, else RedisUnavailableError."""
    deadline = time.monotonic() + wait_s
    failures = 0
    while True:
        try:
            await client.ping()
            return
        except AuthenticationError as exc:
            raise RedisUnavailableError(
                f"Redis at {redact_url(url)} refused the credentials: {exc}"
            ) from exc
        except (RedisError, OSError) as exc:
            failures += 1
            delay = capped_backoff(failures, READY_RETRY_BASE_S, READY_RETRY_CAP_S)
            if time.monotonic() + delay > deadline:
                raise RedisUnavailableError(
                    f"Redis at {redact_url(url)} did not answer within {wait_s:g} s: {exc}"
                ) from exc
            log.info("redis_waiting", url=redact_url(url), error=str(exc))
            await asyncio.sleep(delay)


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
        log.warning("redis_eviction_policy", policy=policy)
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
