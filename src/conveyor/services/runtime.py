"""What every service needs at start: a Redis URL (embedded by default) and a checked client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis

from conveyor.config import Settings
from conveyor.embedded import EmbeddedRedis
from conveyor.jobs import RetryPolicy
from conveyor.redis import open_redis


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """CONVEYOR_REDIS_URL when set; else the project's embedded Redis (started if needed)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    with EmbeddedRedis(settings.data_dir) as embedded:
        yield embedded.url


async def open_checked(settings: Settings, url: str, **extra: object) -> Redis:
    """A client that has answered PING and passed the eviction-policy check."""
    return await open_redis(
        url,
        wait_s=settings.redis_wait_s,
        timeout_s=settings.redis_timeout_s,
        eviction=settings.eviction_check,
        **extra,
    )


def default_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy.from_retries(
        settings.retries, settings.backoff_type, settings.backoff_delay_ms
    )


def encoded_slash_segment(scope: Mapping[str, Any]) -> str | None:
    """The first path segment the client sent with an encoded ``/`` (``%2F``), decoded.

    The router matches the decoded path, so ``/jobs/x%2Flogs`` would reach job ``x``'s logs;
    no job id contains ``/`` (they are refused at enqueue), so such a request names no job.
    """
    raw = scope.get("raw_path")
    if not isinstance(raw, bytes) or b"%2" not in raw:
        return None
    for segment in raw.split(b"?", 1)[0].split(b"/"):
        if b"%2f" in segment.lower():
            return unquote(segment.decode("latin-1"))
    return None
