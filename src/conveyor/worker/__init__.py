"""The worker: runs jobs with locks, retries and backoff."""

from conveyor.worker.runner import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions"]
