"""Contender: the raw Python ``bullmq.Worker`` (the package Conveyor builds on), as documented.

Its defaults are kept (lock renewal, stalled-job check); jobs retry with the backoff their
options carry. Completions and failed attempts are counted from its ``completed`` and
``failed`` events.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bullmq import Worker

from bench.workers.protocol import Recorder, common_arguments, run_main


async def main(args: argparse.Namespace) -> None:
    recorder = Recorder(args.expect)
    recorder.listen_stdin(asyncio.get_running_loop())

    async def process(job: Any, token: str) -> None:
        recorder.job_started(job.data)

    worker = Worker(
        args.queue,
        process,
        {
            "connection": args.redis,
            "prefix": args.prefix,
            "concurrency": args.concurrency,
            "autorun": False,
        },
    )
    worker.on("completed", lambda job, result: recorder.job_finished())
    worker.on("failed", lambda job, err: recorder.job_finished())
    await worker.client.ping()
    recorder.ready()
    await recorder.go.wait()
    running = asyncio.create_task(worker.run())
    await recorder.done.wait()
    recorder.mark_end()
    recorder.report(contender="bullmq-python", concurrency=args.concurrency)
    await worker.close()
    await running


if __name__ == "__main__":
    arguments = common_arguments(__doc__.splitlines()[0]).parse_args()
    run_main(lambda: main(arguments), arguments.loop)
