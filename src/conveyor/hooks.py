"""Worker lifecycle hooks: how logging and metrics observe jobs without living in the loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class JobEvent:
    """What a hook learns about one attempt of one job."""

    job_id: str
    name: str
    queue: str
    attempt: int
    max_attempts: int
    #: Milliseconds from this attempt's due time (enqueue, end of a delay or of a retry's
    #: backoff) to its start.
    wait_ms: float = 0.0
    #: Milliseconds the attempt ran.
    duration_ms: float = 0.0
    error: str | None = None
    retry_delay_ms: int | None = None
    #: How many times the job has been put back for want of its task (``job_deferred``).
    deferrals: int = 0


class WorkerHooks(Protocol):
    """Called by the worker at each step of a job's life. Hooks must be quick and not raise."""

    def job_started(self, event: JobEvent) -> None: ...
    def job_completed(self, event: JobEvent) -> None: ...
    def job_retrying(self, event: JobEvent) -> None: ...
    def job_failed(self, event: JobEvent) -> None: ...
    def job_deferred(self, event: JobEvent) -> None:
        """The worker does not know the job's task: it was put back for another worker (not
        an attempt), to run in ``retry_delay_ms``."""
        ...


class NoHooks:
    """Hooks that do nothing."""

    def job_started(self, event: JobEvent) -> None:
        pass

    def job_completed(self, event: JobEvent) -> None:
        pass

    def job_retrying(self, event: JobEvent) -> None:
        pass

    def job_failed(self, event: JobEvent) -> None:
        pass

    def job_deferred(self, event: JobEvent) -> None:
        pass


class HookChain:
    """Several hooks called in order."""

    def __init__(self, *hooks: WorkerHooks) -> None:
        self.hooks = hooks

    def job_started(self, event: JobEvent) -> None:
        for hook in self.hooks:
            hook.job_started(event)

    def job_completed(self, event: JobEvent) -> None:
        for hook in self.hooks:
            hook.job_completed(event)

    def job_retrying(self, event: JobEvent) -> None:
        for hook in self.hooks:
            hook.job_retrying(event)

    def job_failed(self, event: JobEvent) -> None:
        for hook in self.hooks:
            hook.job_failed(event)

    def job_deferred(self, event: JobEvent) -> None:
        for hook in self.hooks:
            hook.job_deferred(event)
