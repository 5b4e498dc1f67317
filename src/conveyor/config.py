"""Typed settings, read from CONVEYOR_* environment variables once, at the entrypoint.

The environment names are a public contract (scripts and compose files use them): every field
below is read from ``CONVEYOR_<FIELD NAME IN UPPER CASE>``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.errors import ConfigurationError
from conveyor.hashtag import no_hash_tag, queue_hash_tag
from conveyor.limits import QueueLimits, RateLimit, check_concurrency, parse_rate
from conveyor.policy import (
    DEFAULT_BACKOFF_DELAY_MS,
    DEFAULT_RETRIES,
    MAX_ATTEMPTS,
    MAX_BACKOFF_MS,
    BackoffType,
    RetryPolicy,
)
from conveyor.queues import add_queue, parse_queue_weights
from conveyor.redis_url import is_cluster_url, redis_url_problem

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


#: Monitor roles: rw may look and act, ro may only look.
MONITOR_ROLES = ("rw", "ro")


def split_account(entry: str) -> tuple[str, str, str]:
    """``user:password:role`` -> its parts (the password may itself hold ':')."""
    user, _, rest = entry.partition(":")
    password, _, role = rest.rpartition(":")
    return user.strip(), password, role.strip().lower()


class Settings(BaseSettings):
    """Every setting of every Conveyor service. Tests build it directly: ``Settings(queue=...)``."""

    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", extra="ignore", frozen=True, validate_default=True
    )

    # --- Redis -------------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Redis URL: redis://, rediss:// (TLS) or unix:// for one server; "
        "redis+sentinel://[[user]:password@]host1:port1[,host2:port2...]/MASTER_NAME[/DB] "
        "(or rediss+sentinel://) to find the master through Redis Sentinel. Unset: the "
        "embedded redis-server of CONVEYOR_DATA_DIR, shared by every command (started by the "
        "first, stopped when the last exits).",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description="The sentinels' own password (requirepass in sentinel.conf), for "
        "redis+sentinel:// URLs; the URL's password is the master's.",
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
    enqueue_replicas: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Acknowledge an enqueue (API 201, QueueClient) only once this many "
        "replicas hold the job (Redis WAIT); 0: once the master has it. See docs/scaling.md.",
    )
    enqueue_replicas_timeout_ms: int = Field(
        default=1000,
        ge=1,
        le=60_000,
        description="How long an enqueue waits for CONVEYOR_ENQUEUE_REPLICAS replicas before "
        "it is refused (API 503; QueueClient raises ReplicationError). Must be under "
        "CONVEYOR_REDIS_TIMEOUT_S; the API's own bound, CONVEYOR_API_REDIS_TIMEOUT_S, "
        "applies too.",
    )
    data_dir: Path = Field(
        default=Path(".conveyor"),
        description="Folder for the embedded Redis's AOF data and other local state.",
    )

    # --- Queue -------------------------------------------------------------------------------
    queue: str = Field(
        default=DEFAULT_QUEUE,
        min_length=1,
        description="The queue's name; with CONVEYOR_QUEUES, the API's default queue (one of "
        "them; default: the first).",
    )
    queues: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated queues one worker process serves, each with an optional "
        "weight (`orders:3,emails:1`): the process's concurrency is shared by weight while "
        "several have work. The API accepts these queues, the monitor, `conveyor stats` and "
        "cleanup cover them. Empty: CONVEYOR_QUEUE alone.",
    )
    prefix: str = Field(
        default=DEFAULT_PREFIX, min_length=1, description="BullMQ key prefix (Node's default)."
    )
    failed_key_prefix: str = Field(
        default="failedJobs",
        min_length=1,
        description="The seed's queue (taskQueue under prefix bull) keeps its permanent "
        "failure records at <failed_key_prefix>:<jobId>, indexed in <failed_key_prefix>-index; "
        "every other queue at <prefix>:<queue>:conveyor:failed:<jobId>. Also where records "
        "of earlier versions are looked for.",
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
        default=DEFAULT_RETRIES,
        ge=0,
        le=MAX_ATTEMPTS - 1,
        description="Retries after the first attempt (5 = 6 attempts).",
    )
    backoff_delay_ms: int = Field(
        default=DEFAULT_BACKOFF_DELAY_MS,
        ge=0,
        le=MAX_BACKOFF_MS,
        description="Base delay of the exponential backoff (ms).",
    )
    backoff_type: BackoffType = Field(
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
    heartbeat_interval_ms: int = Field(
        default=500,
        ge=0,
        le=60_000,
        description="How often each worker beats on its queue; 0 turns the heartbeat (and the "
        "quick recovery of dead peers' jobs) off.",
    )
    dead_worker_after_ms: int = Field(
        default=2000,
        ge=500,
        description="A worker silent this long whose connections to Redis are all closed is "
        "dead: a peer puts its jobs back at once (docs/reliability.md#crash-recovery).",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long active jobs get to finish."
    )
    job_timeout_s: float | None = Field(
        default=None, gt=0, description="Default per-attempt timeout for tasks that set none."
    )
    unknown_task_timeout_s: float = Field(
        default=604_800.0,
        gt=0,
        description="A job whose task this worker does not know is put back (not an attempt) "
        "for a worker that does, every minute at most; it fails for good only after waiting "
        "this long (seconds; 604800 = 7 days).",
    )
    watchdog_s: float | None = Field(
        default=None,
        gt=0,
        description="Exit the worker process when a handler blocks its event loop this long "
        "(so it is restarted and the job recovered); default: the lock duration.",
    )
    max_memory_mb: int | None = Field(
        default=None,
        ge=64,
        description="Address-space limit per worker process: a handler that exhausts memory "
        "gets MemoryError (the attempt fails and is retried) instead of the OOM killer.",
    )

    # --- Flow control (docs/flow-control.md) -----------------------------------------------------
    rate_limit: str | None = Field(
        default=None,
        description="Queue-wide rate limit written to the queue (BullMQ's meta max/duration, "
        "as Node's setGlobalRateLimit) by every worker at start: max/period, e.g. 100/s, "
        "600/m, 5/1500ms; `none` removes it. Unset: left as it is in Redis.",
    )
    queue_concurrency: str | None = Field(
        default=None,
        description="Queue-wide concurrency (jobs active at once across every worker, BullMQ's "
        "meta concurrency, as Node's setGlobalConcurrency) written by every worker at start; "
        "`none` removes it. Unset: left as it is in Redis.",
    )
    worker_rate_limit: str | None = Field(
        default=None,
        description="This worker's own limiter (BullMQ Worker's `limiter` option): jobs "
        "started by all the workers of the queue that have one are counted together, e.g. "
        "5/s. With a queue-wide rate limit also set, BullMQ counts against the queue's max over "
        "this limiter's period.",
    )

    @field_validator("rate_limit", "worker_rate_limit", "queue_concurrency", mode="before")
    @classmethod
    def _blank_limit_is_unset(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit", "worker_rate_limit")
    @classmethod
    def _check_rate(cls, value: str | None, info: object) -> str | None:
        if value is None:
            return None
        if value.strip().lower() == "none":
            if getattr(info, "field_name", "") == "worker_rate_limit":
                raise ValueError("unset it for no limiter")
            return "none"
        return str(parse_rate(value))

    @field_validator("queue_concurrency")
    @classmethod
    def _check_queue_concurrency(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == "none":
            return None if value is None else "none"
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise ValueError(f"a whole number or none, not {value!r}")
        check_concurrency(int(text))
        return text

    @property
    def queue_limits(self) -> tuple[QueueLimits, frozenset[str]]:
        """The queue-wide limits workers write at start, and which of them to write
        (``rate``, ``concurrency``): only those whose setting is given (``none``: remove)."""
        given = frozenset(
            part
            for part, value in (("rate", self.rate_limit), ("concurrency", self.queue_concurrency))
            if value is not None
        )
        rate = None if self.rate_limit in (None, "none") else parse_rate(self.rate_limit)
        concurrency = None
        if self.queue_concurrency not in (None, "none"):
            concurrency = int(self.queue_concurrency)
        return QueueLimits(rate=rate, concurrency=concurrency), given

    @property
    def worker_limiter(self) -> RateLimit | None:
        return None if self.worker_rate_limit is None else parse_rate(self.worker_rate_limit)

    # --- API service (conveyor api) -----------------------------------------------------------
    api_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the API listens on (0.0.0.0: every interface, e.g. in a container).",
    )
    api_port: int = Field(default=8000, ge=1, le=65535, description="The API's port.")
    api_workers: int = Field(
        default=1, ge=1, le=64, description="API server processes sharing the port."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys. When set, every endpoint but /healthz and "
        "/readyz needs `Authorization: Bearer <key>`. Empty: no authentication.",
    )
    api_max_body_bytes: int = Field(
        default=1_048_576, ge=256, description="Largest request body accepted (bytes); 413 above."
    )
    api_bulk_max_jobs: int = Field(
        default=1000, ge=1, le=100_000, description="Most jobs in one POST /enqueue/bulk."
    )
    api_cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed by CORS ('*' for any). Empty: CORS off.",
    )
    api_redis_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Longest a request waits on Redis before it answers 503 (seconds).",
    )
    api_redis_bulk_ms_per_job: float = Field(
        default=0.5,
        ge=0,
        le=100,
        description="Extra time a POST /enqueue/bulk gets on Redis per job, beyond "
        "api_redis_timeout_s (ms), so a big batch is not cut off while Redis writes it.",
    )
    api_retry_after_s: int = Field(
        default=1, ge=0, le=3600, description="Retry-After (seconds) sent with every 503."
    )
    api_batch_enqueue: bool = Field(
        default=True,
        description="Gather the enqueues that arrive together (one event-loop tick) into one "
        "Redis pipeline. Off: one round trip per job.",
    )
    api_redis_connections: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Redis calls in flight at once per API process; more wait their turn "
        "(within api_redis_timeout_s).",
    )
    api_redis_pipelines: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Batched-enqueue pipelines in flight at once per API process.",
    )
    api_max_pending: int = Field(
        default=10_000,
        ge=1,
        description="Enqueues waiting for Redis at once per API process; above it, 503.",
    )
    api_access_log: bool = Field(default=False, description="Log every HTTP request (uvicorn).")
    api_fast_path: bool = Field(
        default=True,
        description="Answer POST /enqueue in a thin ASGI layer before FastAPI's routing (same "
        "checks, errors and answers). Off: the FastAPI route serves it.",
    )
    api_telemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry spans and metrics (needs a configured "
        "OpenTelemetry provider).",
    )

    @field_validator("api_keys", "api_cors_origins", mode="before")
    @classmethod
    def _split_api_lists(cls, value: object) -> object:
        return _split_csv(value)

    # --- HTTP (the API and the monitor) ---------------------------------------------------------
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host names the API and the monitor answer to, besides "
        "localhost, *.localhost, any IP address and their own --host (a guard against DNS "
        "rebinding). Add the names clients use, e.g. `api,monitor,queue.example.com`; '*' "
        "accepts any.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A client must send a request's headers within this time (seconds) of "
        "its first byte (or of connecting); else 408 and the connection is closed.",
    )
    http_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A client must send a request's whole body within this time (seconds) of "
        "its headers; else 408 and the connection is closed.",
    )
    http_keep_alive_s: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="An idle keep-alive connection is closed after this time (seconds).",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Open connections per server process; beyond it a new connection is "
        "answered 503 and closed. The soft open-files limit is raised to fit it (within the "
        "hard limit; a warning when that is lower).",
    )

    @field_validator("http_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        return _split_csv(value)

    # --- Monitor service (conveyor monitor) -----------------------------------------------------
    monitor_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the monitor listens on (0.0.0.0: every interface).",
    )
    monitor_port: int = Field(default=8001, ge=1, le=65535, description="The monitor's port.")
    monitor_users: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated user:password:role accounts for the monitor; role rw may "
        "act (retry, remove, pause), ro may only look. Empty: no login (bind to localhost).",
    )
    monitor_read_only: bool = Field(
        default=False, description="Refuse every monitor action, whoever asks."
    )
    monitor_metrics_public: bool = Field(
        default=False, description="Serve /metrics without credentials even when users are set."
    )
    monitor_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated queues the monitor always shows (besides CONVEYOR_QUEUE "
        "and the queues it discovers).",
    )
    monitor_redis_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Longest the monitor's /readyz waits on Redis before it answers 503 (seconds).",
    )
    monitor_discover_queues: bool = Field(
        default=True, description="Find the prefix's other queues by scanning for their keys."
    )
    monitor_refresh_s: float = Field(
        default=1.0, ge=0.1, le=60, description="How often live counts are pushed (seconds)."
    )
    monitor_error_sample: int = Field(
        default=2000,
        ge=10,
        le=100_000,
        description="Newest failed jobs read to group failures by error message.",
    )
    stats_enabled: bool = Field(
        default=True,
        description="Workers record throughput and latency history in Redis (for the monitor "
        "and /metrics), flushed once a second.",
    )
    stats_history_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        description="How long per-second throughput and latency history is kept in Redis.",
    )

    @field_validator("monitor_users", "monitor_queues", mode="before")
    @classmethod
    def _split_monitor_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("monitor_users")
    @classmethod
    def _check_monitor_users(cls, value: list[SecretStr]) -> list[SecretStr]:
        seen: set[str] = set()
        for entry in value:
            user, password, role = split_account(entry.get_secret_value())
            if not user or not password or role not in MONITOR_ROLES:
                raise ValueError(
                    f"each account is user:password:role with role rw or ro (got user {user!r})"
                )
            if user in seen:
                raise ValueError(f"user {user!r} is listed twice")
            seen.add(user)
        return value

    # --- Cleanup service (conveyor cleanup) -----------------------------------------------------
    cleanup_interval_s: float = Field(
        default=86_400.0,
        ge=1,
        description="Time between cleanup runs (seconds; 86400 = daily). The schedule lives in "
        "Redis: one run per interval across all cleanup replicas and restarts.",
    )
    failed_retention_s: float = Field(
        default=604_800.0,
        ge=0,
        description="Failed jobs and their failure records older than this are removed "
        "(seconds; 604800 = 7 days).",
    )
    completed_retention_s: float | None = Field(
        default=None,
        ge=0,
        description="When set, completed jobs older than this are removed too (seconds). "
        "Unset: completed jobs are left to BullMQ's removeOnComplete.",
    )
    cleanup_batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Jobs or records removed per Redis call, so a large backlog never blocks "
        "Redis.",
    )

    @field_validator("completed_retention_s", mode="before")
    @classmethod
    def _empty_retention_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # --- Logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level written."
    )
    log_format: LogFormat = Field(default=LogFormat.CONSOLE, description="console or json.")

    @field_validator("queues", mode="before")
    @classmethod
    def _parse_queues(cls, value: object) -> object:
        return parse_queue_weights(value) if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _default_queue(cls, data: object) -> object:
        """With CONVEYOR_QUEUES and no CONVEYOR_QUEUE, the first listed is the default."""
        if isinstance(data, dict) and data.get("queues") and not data.get("queue"):
            queues = data["queues"]
            try:
                names = list(parse_queue_weights(queues) if isinstance(queues, str) else queues)
            except ValueError:
                return data  # the field's own validator says what is wrong
            if names:
                data = {**data, "queue": names[0]}
        return data

    @field_validator("queues")
    @classmethod
    def _check_queues(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        checked: dict[str, int] = {}
        for name, weight in value.items():
            add_queue(checked, name, weight)  # the same checks for a dict given in code
        queue = info.data.get("queue")
        if value and queue is not None and queue not in value:
            raise ValueError(f"CONVEYOR_QUEUE {queue!r} is not one of them ({', '.join(value)})")
        return checked

    @model_validator(mode="after")
    def _cluster_needs_hash_tags(self) -> Settings:
        """In a Redis Cluster each queue's keys must share one slot (``conveyor.hashtag``)."""
        if is_cluster_url(self.redis_url):
            names = [*self.queue_weights, *self.monitor_queues]
            for name in dict.fromkeys(names):
                if queue_hash_tag(self.prefix, name) is None:
                    raise ValueError(no_hash_tag(self.prefix, name))
        return self

    @property
    def queue_weights(self) -> dict[str, int]:
        """The queues served, with their weights: CONVEYOR_QUEUES, else CONVEYOR_QUEUE."""
        return dict(self.queues) if self.queues else {self.queue: 1}

    @field_validator("tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("enqueue_replicas_timeout_ms")
    @classmethod
    def _check_wait(cls, value: int, info: ValidationInfo) -> int:
        socket_timeout_s = info.data.get("redis_timeout_s")
        if socket_timeout_s is not None and value >= socket_timeout_s * 1000:
            raise ValueError(
                f"{value} ms is not under CONVEYOR_REDIS_TIMEOUT_S ({socket_timeout_s:g} s), "
                "which would cut the connection first"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        problem = redis_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def attempts(self) -> int:
        """Total attempts of a job: the first one plus the retries."""
        return self.retries + 1

    @property
    def retry_policy(self) -> RetryPolicy:
        """The queue's retry policy, for jobs whose options and task say nothing (the last
        step of ``conveyor.policy``'s precedence)."""
        return RetryPolicy.from_retries(self.retries, self.backoff_type, self.backoff_delay_ms)


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
        field = ".".join(str(p) for p in err["loc"])
        if not field:  # a rule between settings: its message names them
            parts.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        parts.append(f"CONVEYOR_{field.upper()}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)
