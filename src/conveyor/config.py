"""Typed settings, read from CONVEYOR_* environment variables once, at the entrypoint.

The environment names are a public contract (scripts and compose files use them): every field
below is read from ``CONVEYOR_<FIELD NAME IN UPPER CASE>``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.errors import ConfigurationError

DEFAULT_QUEUE = "taskQueue"
DEFAULT_PREFIX = "bull"
DEFAULT_TASKS = "conveyor.tasks.builtin"


class EvictionCheck(StrEnum):
    """What to do when Redis has an eviction policy other than ``noeviction``."""

    REFUSE = "refuse"
    WARN = "warn"


class LogFormat(StrEnum):
    """How log lines are written: ``console`` (key=value) or ``json`` (one object a line)."""

    CONSOLE = "console"
    JSON = "json"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of every Conveyor service. Tests build it directly: ``Settings(queue=...)``."""

    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", extra="ignore", frozen=True, validate_default=True
    )

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis URL (redis://, rediss:// or unix://). Unset: start an embedded "
        "redis-server for this process tree.",
    )
    redis_wait_s: float = Field(
        default=10.0, ge=0, description="How long services wait for Redis at start-up."
    )
    redis_timeout_s: float = Field(
        default=5.0, gt=0, description="Socket timeout for Redis commands (seconds)."
    )
    eviction_check: EvictionCheck = Field(
        default=EvictionCheck.REFUSE,
        description="What to do when Redis's maxmemory-policy is not noeviction: refuse or warn.",
    )
    data_dir: Path = Field(
        default=Path(".conveyor"),
        description="Folder for the embedded Redis's AOF data and other local state.",
    )

    # --- Queue -------------------------------------------------------------------------------
    queue: str = Field(default=DEFAULT_QUEUE, min_length=1, description="The queue's name.")
    prefix: str = Field(
        default=DEFAULT_PREFIX, min_length=1, description="BullMQ key prefix (Node's default)."
    )
    failed_key_prefix: str = Field(
        default="failedJobs",
        min_length=1,
        description="Permanent failure records live at <failed_key_prefix>:<jobId>.",
    )
    tasks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_TASKS],
        description="Comma-separated modules whose `registry` (a TaskRegistry) is loaded.",
    )

    # --- Worker ------------------------------------------------------------------------------
    concurrency: int = Field(
        default=10, ge=1, le=10_000, description="Jobs run at once per process."
    )
    processes: int = Field(default=1, ge=1, le=256, description="Worker processes to start.")
    retries: int = Field(
        default=5, ge=0, le=1000, description="Retries after the first attempt (5 = 6 attempts)."
    )
    backoff_delay_ms: int = Field(
        default=1000, ge=0, description="Base delay of the exponential backoff (ms)."
    )
    backoff_type: Literal["exponential", "fixed"] = Field(
        default="exponential", description="Backoff strategy between attempts."
    )
    lock_duration_ms: int = Field(
        default=30_000, ge=1000, description="A job's lock lifetime; renewed at half of it."
    )
    stalled_interval_ms: int = Field(
        default=30_000, ge=1000, description="How often stalled (orphaned) jobs are recovered."
    )
    max_stalled_count: int = Field(
        default=1, ge=0, description="Recoveries allowed before a stalled job fails for good."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long active jobs get to finish."
    )
    job_timeout_s: float | None = Field(
        default=None, gt=0, description="Default per-attempt timeout for tasks that set none."
    )

    # --- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level written."
    )
    log_format: LogFormat = Field(default=LogFormat.CONSOLE, description="console or json.")

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def attempts(self) -> int:
        """Total attempts of a job: the first one plus the retries."""
        return self.retries + 1


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; any problem becomes one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, named by its environment variable."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"CONVEYOR_{field.upper()}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)
