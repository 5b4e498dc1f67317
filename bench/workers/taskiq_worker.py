"""Contender: taskiq with taskiq-redis's ``RedisStreamBroker`` (the one that acknowledges).

The receiver runs as ``taskiq worker`` runs it (``run_receiver_task``), with taskiq's default
of 100 tasks at once unless told otherwise. A job is finished when its message is acked
(XACK), so the count is taken there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

from bench.workers.protocol import Recorder, common_arguments, run_main


def make_broker(url: str, queue: str, recorder: Recorder | None = None) -> RedisStreamBroker:
    """The broker, with a ``noop`` task; ``consumer_id="0"`` so pre-enqueued jobs count."""

    class Counting(RedisStreamBroker):
        def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
            ack = super()._ack_generator(id, queue_name)

            async def counted() -> None:
                await ack()
                if recorder is not None:
                    recorder.job_finished()

            return counted

    broker = Counting(url, queue_name=queue, consumer_id="0")

    @broker.task(task_name="noop")
    async def noop(k: int | None = None, fail: bool = False) -> None:
        if recorder is not None and (k is not None or fail):
            recorder.job_started({"k": k, "fail": fail})

    return broker


async def main(args: argparse.Namespace) -> None:
    recorder = Recorder(args.expect)
    recorder.listen_stdin(asyncio.get_running_loop())
    broker = make_broker(args.redis, args.queue, recorder)
    await broker.startup()
    recorder.ready()
    await recorder.go.wait()
    running = asyncio.create_task(run_receiver_task(broker, max_async_tasks=args.concurrency))
    await recorder.done.wait()
    recorder.mark_end()
    recorder.report(contender="taskiq", concurrency=args.concurrency)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await broker.shutdown()


if __name__ == "__main__":
    arguments = common_arguments(__doc__.splitlines()[0]).parse_args()
    run_main(lambda: main(arguments), arguments.loop)
