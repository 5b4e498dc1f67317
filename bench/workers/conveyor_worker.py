"""Contender: Conveyor's ``Worker``, set up as ``conveyor worker`` sets it up.

``--hooks production`` (the default) is what the service runs: LoggingHooks at INFO (the
console format, written to /dev/null) chained with StatsHooks (the metrics history flushed to
Redis once a second). Lock renewal, the stalled-job check, retries with backoff, delayed-job
promotion and failedJobs records are always on: they are the worker's own duties.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from bench.tasks import make_registry
from bench.workers.protocol import Recorder, common_arguments, run_main
from conveyor import JobEvent, Worker, WorkerHooks, WorkerOptions
from conveyor._bullmq import Fetched, dumps, fetched
from conveyor.hooks import HookChain, NoHooks
from conveyor.observability.logging import LoggingHooks, configure_logging
from conveyor.observability.stats import StatsHooks
from conveyor.redis import connect

HOOKS = ("none", "logging", "stats", "production")


class Counting(NoHooks):
    """Tells the recorder about every finished attempt."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def job_completed(self, event: JobEvent) -> None:
        self.recorder.job_finished()

    def job_retrying(self, event: JobEvent) -> None:
        self.recorder.job_finished()

    def job_failed(self, event: JobEvent) -> None:
        self.recorder.job_finished()


def without_failure_records(worker: Worker) -> None:
    """Measurement only (``--no-records``): permanent failures by BullMQ's moveToFinished
    alone, the script call a worker makes without the failure record that follows it in the
    same script, to show what the record costs."""
    bull = worker.bull
    auto = bull._auto
    assert auto is not None

    async def fail(job: Any, token: str, **kw: Any) -> Fetched:
        keys, args = bull._finish_args(
            job.id,
            target="failed",
            value=kw["error"],
            token=token,
            keep=kw["keep"],
            attempts=kw["attempts"],
            attempts_made=job.attempts_made,
            lock_duration_ms=kw["lock_duration_ms"],
            fetch_next=kw.get("fetch_next", False),
            fields={"failedReason": kw["error"], "stacktrace": dumps(kw["stacktrace"])},
        )
        return fetched(await auto.call(bull._scripts["moveToFinished"], keys, args))

    bull.fail = fail  # type: ignore[method-assign]


def log_to_devnull() -> None:
    """Production logging (the entrypoints' configure_logging: INFO, console format) with
    the lines going nowhere instead of stderr."""
    configure_logging("INFO", "console")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115


async def main(args: argparse.Namespace) -> None:
    recorder = Recorder(args.expect)
    recorder.listen_stdin(asyncio.get_running_loop())
    registry = make_registry(recorder.job_started)
    options = WorkerOptions(
        queue=args.queue,
        prefix=args.prefix,
        concurrency=args.concurrency,
    )
    redis = connect(args.redis)
    blocking = connect(args.redis, timeout_s=options.drain_delay_s + 5)
    await redis.ping()
    kind = args.hooks
    chain: list[WorkerHooks] = []
    stats: StatsHooks | None = None
    if kind in ("logging", "production"):
        log_to_devnull()
        chain.append(LoggingHooks())
    if kind in ("stats", "production"):
        stats = StatsHooks(redis, prefix=options.prefix, task_names=registry.names())
        chain.append(stats)
    chain.append(Counting(recorder))
    worker = Worker(redis, registry, options, blocking_redis=blocking, hooks=HookChain(*chain))
    if args.no_records:
        without_failure_records(worker)
    recorder.ready()
    await recorder.go.wait()
    if stats is not None:
        stats.start()
    running = asyncio.create_task(worker.run(grace_s=5))
    await recorder.done.wait()
    recorder.mark_end()
    recorder.report(contender="conveyor", concurrency=options.concurrency, hooks=kind)
    worker.stop()
    await running
    if stats is not None:
        await stats.close()
    await blocking.aclose()
    await redis.aclose()


if __name__ == "__main__":
    parser = common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--hooks", choices=HOOKS, default="production")
    parser.add_argument("--no-records", action="store_true", help="measurement only")
    arguments = parser.parse_args()
    run_main(lambda: main(arguments), arguments.loop)
