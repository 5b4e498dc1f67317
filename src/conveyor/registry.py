"""The task catalogue: named handlers, each with a pydantic model for its payload."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError

from conveyor.errors import (
    FieldError,
    JobOptionsError,
    PayloadValidationError,
    TaskCatalogueError,
    TaskError,
    UnknownTaskError,
)
from conveyor.limits import RateLimit, check_concurrency, parse_rate
from conveyor.policy import BackoffType, RetryPolicy, check_task_rules, task_policy
from conveyor.schedules import Schedule, to_ms


class JobContext(Protocol):
    """What a handler may ask of the job it runs (given as its second argument)."""

    @property
    def job_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        ...

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (``QueueClient.cancel``, the API, the monitor): a
        sync handler polls it and stops; an async one gets ``asyncio.CancelledError``."""
        ...

    async def progress(self, value: int | float | dict[str, Any]) -> None:
        """Report progress (a percentage or any JSON object); visible in the API and monitor."""
        ...

    async def log(self, message: str) -> None:
        """Append a line to the job's log (BullMQ's job logs)."""
        ...


Handler = Callable[[Any, JobContext], Awaitable[Any]] | Callable[[Any, JobContext], Any]
F = TypeVar("F", bound=Callable[..., Any])


class EmptyPayload(BaseModel):
    """The payload model of tasks that declare none: any JSON object."""

    model_config = {"extra": "allow"}


@dataclass(frozen=True)
class Task:
    """One registered task."""

    name: str
    handler: Callable[..., Any]
    payload_model: type[BaseModel]
    is_async: bool
    retries: int | None = None
    backoff_type: BackoffType | None = None
    backoff_delay_ms: int | None = None
    timeout_s: float | None = None
    #: Per-task limits (``conveyor.worker.task_limits``): None, none.
    rate_limit: RateLimit | None = None
    concurrency: int | None = None

    @property
    def limited(self) -> bool:
        return self.rate_limit is not None or self.concurrency is not None

    def retry_policy(self, default: RetryPolicy) -> RetryPolicy:
        """The task's own retries and backoff, each falling back to ``default``."""
        return task_policy(self, default)

    def validate(self, data: Any) -> BaseModel:
        """The payload as the task's model, or PayloadValidationError with field paths."""
        try:
            return self.payload_model.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise PayloadValidationError(self.name, _field_errors(exc)) from exc


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(path=".".join(str(p) for p in err["loc"]), message=err["msg"], type=err["type"])
        for err in exc.errors()
    ]


class TaskRegistry:
    """A set of named tasks. Build one per catalogue; nothing is global."""

    def __init__(self, tasks: Iterable[Task] = (), schedules: Iterable[Schedule] = ()) -> None:
        self._tasks: dict[str, Task] = {}
        self._schedules: dict[str, Schedule] = {}
        for task in tasks:
            self.add(task)
        for declared in schedules:
            self.add_schedule(declared)

    def add(self, task: Task) -> None:
        if task.name in self._tasks:
            raise TaskError(f"task {task.name!r} is registered twice")
        try:
            check_task_rules(task)
        except JobOptionsError as exc:
            raise TaskError(f"task {task.name!r}: {exc}") from exc
        self._tasks[task.name] = task

    def task(
        self,
        name: str | None = None,
        *,
        payload: type[BaseModel] | None = None,
        retries: int | None = None,
        backoff_type: BackoffType | None = None,
        backoff_delay_ms: int | None = None,
        timeout_s: float | None = None,
        schedule: str | timedelta | None = None,
        tz: str | None = None,
        rate_limit: str | RateLimit | None = None,
        concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register ``handler(payload, ctx)``; the payload model comes from ``payload=`` or the
        first parameter's annotation. Sync handlers run in a thread pool.

        ``schedule``: a cron pattern (in ``tz``) or an interval: the task also runs on that
        schedule (id: the task's name, empty payload); see ``schedule()`` for more.
        ``rate_limit`` (``"10/s"``) and ``concurrency`` hold for the task across every Conveyor
        worker of a queue (docs/flow-control.md#per-task-limits); a bad one raises LimitError
        here."""
        rate = parse_rate(rate_limit) if isinstance(rate_limit, str) else rate_limit
        if concurrency is not None:
            check_concurrency(concurrency)

        def register(handler: F) -> F:
            model = payload or _annotated_model(handler) or EmptyPayload
            self.add(
                Task(
                    name=name or handler.__name__,
                    handler=handler,
                    payload_model=model,
                    is_async=inspect.iscoroutinefunction(handler),
                    retries=retries,
                    backoff_type=backoff_type,
                    backoff_delay_ms=backoff_delay_ms,
                    timeout_s=timeout_s,
                    rate_limit=rate,
                    concurrency=concurrency,
                )
            )
            if schedule is not None:
                task_name = name or handler.__name__
                if isinstance(schedule, timedelta):
                    self.schedule(task_name, every=schedule)
                else:
                    self.schedule(task_name, cron=schedule, tz=tz)
            return handler

        return register

    def schedule(
        self,
        schedule_id: str,
        task: str | None = None,
        data: Any = None,
        *,
        every: timedelta | None = None,
        cron: str | None = None,
        tz: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> Schedule:
        """Declare a schedule: ``task`` (default: ``schedule_id``) with ``data``, ``every``
        interval or on a ``cron`` pattern in ``tz``; optional ``start``, ``end`` and
        ``limit`` (runs in all). Workers bring it in line as they start (docs/schedules.md).
        """
        declared = Schedule(
            id=schedule_id,
            task=task or schedule_id,
            data=data if data is not None else {},
            every_ms=int(every.total_seconds() * 1000) if every is not None else None,
            cron=cron,
            tz=tz,
            start_ms=to_ms(start, "start"),
            end_ms=to_ms(end, "end"),
            limit=limit,
        )
        self.add_schedule(declared)
        return declared

    def add_schedule(self, declared: Schedule) -> None:
        if declared.id in self._schedules:
            raise TaskError(f"schedule {declared.id!r} is declared twice")
        self._schedules[declared.id] = declared

    def schedules(self) -> list[Schedule]:
        """The schedules declared in code, by id."""
        return [self._schedules[k] for k in sorted(self._schedules)]

    def get(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(name, list(self._tasks)) from None

    def validate(self, name: str, data: Any) -> BaseModel:
        """Check a job before it is enqueued: known task, payload that fits its model."""
        return self.get(name).validate(data)

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def merge(self, other: TaskRegistry) -> TaskRegistry:
        merged = TaskRegistry(self._tasks.values(), self._schedules.values())
        for task in other._tasks.values():
            merged.add(task)
        for declared in other._schedules.values():
            merged.add_schedule(declared)
        return merged


def _annotated_model(handler: Callable[..., Any]) -> type[BaseModel] | None:
    try:
        hints = get_type_hints(handler)
    except Exception:
        return None
    params = list(inspect.signature(handler).parameters)
    if not params:
        return None
    hint = hints.get(params[0])
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint
    return None


def load_registry(modules: list[str]) -> TaskRegistry:
    """Import each ``package.module`` (or ``package.module:attribute``) and merge the
    TaskRegistry it exposes (attribute ``registry`` by default)."""
    merged = TaskRegistry()
    for spec in modules:
        module_name, _, attribute = spec.partition(":")
        attribute = attribute or "registry"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise TaskCatalogueError(_import_failure(module_name, exc)) from exc
        registry = getattr(module, attribute, None)
        if not isinstance(registry, TaskRegistry):
            raise TaskCatalogueError(
                f"CONVEYOR_TASKS: {module_name!r} has no TaskRegistry named {attribute!r}"
            )
        try:
            merged = merged.merge(registry)
        except TaskError as exc:
            raise TaskCatalogueError(f"CONVEYOR_TASKS: {exc}") from exc
    return merged


def _import_failure(module_name: str, exc: Exception) -> str:
    """Why a task module did not import, with where it was looked for when it was not found."""
    cause = f"{type(exc).__name__}: {exc}"
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing and (module_name == missing or module_name.startswith(missing + ".")):
        return (
            f"CONVEYOR_TASKS: cannot import {module_name!r} from {os.getcwd()} (the current "
            f"directory) or the installed packages ({cause}); run the command from the folder "
            f"that holds {missing.split('.')[0]!r}, or install it"
        )
    return f"CONVEYOR_TASKS: cannot import {module_name!r}: {cause}"
