"""The Redis connection every service starts with: a URL (embedded by default), a checked client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio import Redis

from conveyor.config import Settings
from conveyor.embedded import EmbeddedRedis
from conveyor.redis import open_redis


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """CONVEYOR_REDIS_URL when set; else the project's embedded Redis (started if needed)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir) as embedded:
        yield embedded.url


def sentinel_password(settings: Settings) -> str | None:
    """The sentinels' own password (CONVEYOR_REDIS_SENTINEL_PASSWORD), for ``connect``."""
    secret = settings.redis_sentinel_password
    return secret.get_secret_value() if secret is not None else None


async def open_checked(settings: Settings, url: str, **extra: object) -> Redis:
    """A client that has answered PING and passed the eviction-policy check."""
    return await open_redis(
        url,
        wait_s=settings.redis_wait_s,
        timeout_s=settings.redis_timeout_s,
        eviction=settings.eviction_check,
        sentinel_password=sentinel_password(settings),
        **extra,
    )
