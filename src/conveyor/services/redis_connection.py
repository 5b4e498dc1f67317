"""The Redis connection every service starts with: a URL (embedded by default), a checked client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from redis.asyncio import Redis

from conveyor.config import Settings
from conveyor.embedded import EmbeddedRedis
from conveyor.hashtag import queue_route_key
from conveyor.redis import open_redis
from conveyor.redis_url import is_cluster_url


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """CONVEYOR_REDIS_URL when set; else the project's embedded Redis (started if needed)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    # A new embedded Redis never takes a port this process is about to serve HTTP on.
    with EmbeddedRedis(
        settings.data_dir, avoid_ports=(settings.api_port, settings.monitor_port)
    ) as embedded:
        yield embedded.url


def sentinel_password(settings: Settings) -> str | None:
    """The sentinels' own password (CONVEYOR_REDIS_SENTINEL_PASSWORD), for ``connect``."""
    secret = settings.redis_sentinel_password
    return secret.get_secret_value() if secret is not None else None


async def open_checked(
    settings: Settings, url: str, *, queue: str | None = None, **extra: object
) -> Redis:
    """A client that has answered PING and passed the eviction-policy check. In a Redis
    Cluster, it is the client of ``queue``'s slot (default: the settings' queue)."""
    return await open_redis(
        url,
        wait_s=settings.redis_wait_s,
        timeout_s=settings.redis_timeout_s,
        eviction=settings.eviction_check,
        sentinel_password=sentinel_password(settings),
        route_key=queue_route_key(settings.prefix, queue or settings.queue),
        **extra,
    )


class QueueConnections:
    """The clients of several queues: in a Redis Cluster one per queue (each to the master of
    its slot, checked as ``open_checked`` checks), else ``default`` for every queue."""

    def __init__(self, settings: Settings, url: str, default: Redis, **extra: object) -> None:
        self.settings = settings
        self.url = url
        self.default = default
        self.cluster = is_cluster_url(url)
        self._extra = extra
        self._opened: dict[str, Redis] = {}
        self._lock = asyncio.Lock()

    async def of(self, queue: str) -> Redis:
        """The client for ``queue`` (opened on first use in a cluster)."""
        if not self.cluster or queue == self.settings.queue:
            return self.default
        if queue not in self._opened:
            async with self._lock:
                if queue not in self._opened:
                    self._opened[queue] = await open_checked(
                        self.settings, self.url, queue=queue, **self._extra
                    )
        return self._opened[queue]

    async def aclose(self) -> None:
        """Close the clients opened here (not ``default``)."""
        opened, self._opened = self._opened, {}
        for client in opened.values():
            await client.aclose()
