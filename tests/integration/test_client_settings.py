"""QueueClient.from_settings(): the environment's settings, and the embedded Redis found."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import EmbeddedRedis
from conveyor.errors import RedisUnavailableError


async def test_without_a_url_the_client_finds_the_embedded_redis(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as embedded:
        settings = Settings(data_dir=tmp_path, queue="found")
        async with QueueClient.from_settings(settings) as client:
            await client.enqueue("anything", {})
            assert client.redis.connection_pool.connection_kwargs["port"] == int(
                embedded.url.rsplit(":", 1)[1].split("/")[0]
            )
            assert sum((await client.counts()).values()) == 1


def test_without_a_url_or_a_running_embedded_redis_it_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RedisUnavailableError, match="no embedded Redis is running") as info:
        QueueClient.from_settings(Settings(data_dir=tmp_path))
    assert "conveyor worker" in str(info.value)


async def test_settings_default_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", redis_url)
    monkeypatch.setenv("CONVEYOR_QUEUE", "from-env")
    async with QueueClient.from_settings() as client:
        assert client.queue == "from-env"
        assert await client.redis.ping()


async def test_on_a_given_pool_the_client_takes_the_settings_and_leaves_the_pool_open(
    redis: Redis, settings: Settings
) -> None:
    tuned = settings.model_copy(update={"retries": 2, "failed_key_prefix": "lost"})
    client = QueueClient.from_settings(tuned, redis=redis, queue="other", pipelined=False)
    async with client:
        job_id = await client.enqueue("anything", {})
        assert client.redis is redis
        assert (client.queue, client.bull.prefix) == ("other", settings.prefix)
        assert client.default_policy.attempts == 3
        assert client.failed_key_prefix == "lost"
        assert await redis.exists(client.bull.job_key(job_id))
    assert await redis.ping()  # close() left the caller's pool open


def test_a_pool_and_a_url_together_are_refused(redis: Redis, redis_url: str) -> None:
    with pytest.raises(ValueError, match="not both"):
        QueueClient.from_settings(Settings(), redis_url, redis=redis)
