"""Settings: the public environment names, defaults, and one-line errors."""

from __future__ import annotations

import pytest

from conveyor.config import EvictionCheck, Settings, load_settings
from conveyor.errors import ConfigurationError


def test_defaults_follow_the_seed() -> None:
    settings = Settings()
    assert settings.queue == "taskQueue"
    assert settings.retries == 5
    assert settings.attempts == 6
    assert settings.backoff_type == "exponential"
    assert settings.redis_url is None
    assert settings.eviction_check is EvictionCheck.REFUSE


def test_public_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("CONVEYOR_QUEUE", "emails")
    monkeypatch.setenv("CONVEYOR_TASKS", "myapp.tasks, conveyor.tasks.builtin")
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "32")
    monkeypatch.setenv("CONVEYOR_RETRIES", "2")
    monkeypatch.setenv("CONVEYOR_BACKOFF_DELAY_MS", "250")
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6390/2"
    assert settings.queue == "emails"
    assert settings.tasks == ["myapp.tasks", "conveyor.tasks.builtin"]
    assert settings.concurrency == 32
    assert settings.retries == 2
    assert settings.backoff_delay_ms == 250


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("CONVEYOR_CONCURRENCY", "lots", "CONVEYOR_CONCURRENCY"),
        ("CONVEYOR_CONCURRENCY", "0", "CONVEYOR_CONCURRENCY"),
        ("CONVEYOR_RETRIES", "-1", "CONVEYOR_RETRIES"),
        ("CONVEYOR_REDIS_URL", "http://localhost", "CONVEYOR_REDIS_URL"),
        ("CONVEYOR_LOG_FORMAT", "xml", "CONVEYOR_LOG_FORMAT"),
    ],
)
def test_broken_settings_give_one_readable_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_empty_redis_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "")
    assert load_settings().redis_url is None
