"""Send the Redis commands of requests that arrive together in one pipeline.

Under load many enqueue requests are ready in the same event-loop tick. Instead of one
round trip each, the batcher gathers every operation submitted during a tick and sends them
as one non-transactional pipeline; each request then gets its own commands' results. A bad
job cannot fail its neighbours: validation happened before, and Redis answers each command
on its own (``raise_on_error=False``). At most ``max_inflight`` pipelines are on the wire at
once (one connection each); what arrives meanwhile waits for the next one, so batches grow
with the load.

The first pipeline checks that Redis holds the Lua scripts (redis-py's SCRIPT EXISTS round
trip); later ones skip that check, and operations whose commands meet NOSCRIPT (Redis restarted
or flushed its scripts) are sent again with the check. Why this is not the worker's
``AutoPipeline``, and the NOSCRIPT rule both follow: ``conveyor.pipeline``.

Every operation is answered within ``timeout_s`` of its submission without a timer of its own:
it carries a deadline; one that expires before it is sent fails (TimeoutError) and is never
sent, and a pipeline may take only until the earliest deadline among its operations.

With ``CONVEYOR_ENQUEUE_REPLICAS`` each pipeline ends with ``WAIT`` (``conveyor.replication``):
its operations are answered once the replicas hold them, or all fail with ReplicationError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from conveyor.log import get_logger
from conveyor.pipeline import resend_noscript
from conveyor.replication import ReplicaAck
from conveyor.services.api.problems import OverloadedError

log = get_logger("conveyor.api")

#: Queues an operation's commands on a pipeline; answers how many it queued.
Operation = Callable[[Pipeline], Awaitable[int]]

_Entry = tuple[Operation, "asyncio.Future[list[Any]]", float]


class PipelineBatcher:
    """Gathers the operations of one event-loop tick into one Redis pipeline."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_inflight: int,
        max_pending: int,
        timeout_s: float,
        max_batch: int = 1000,
        ack: ReplicaAck | None = None,
    ) -> None:
        self.redis = redis
        #: CONVEYOR_ENQUEUE_REPLICAS: each pipeline ends with WAIT, and a pipeline whose
        #: replicas did not acknowledge it in time fails all its operations (503).
        self.ack = ack
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._pending: list[_Entry] = []
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Whether Redis is known to hold the pipelines' scripts (checked by the first one).
        self._scripts_loaded = False
        #: Pipelines sent and operations carried, for the logs and the benchmark.
        self.batches = 0
        self.operations = 0

    async def run(self, operation: Operation) -> list[Any]:
        """Send ``operation`` with the others of this tick; answers its commands' results
        (a failed command's result is its exception)."""
        if len(self._pending) >= self.max_pending:
            raise OverloadedError(
                f"{len(self._pending)} enqueues are already waiting for Redis; try again later"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((operation, future, loop.time() + self.timeout_s))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        now = asyncio.get_running_loop().time()
        while self._pending and self._inflight < self.max_inflight:
            batch = []
            for entry in self._pending[: self.max_batch]:
                future, deadline = entry[1], entry[2]
                if future.done():
                    continue
                if deadline <= now:
                    future.set_exception(TimeoutError("Redis did not take the job in time"))
                    continue
                batch.append(entry)
            del self._pending[: self.max_batch]
            if not batch:
                continue
            self._inflight += 1
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipeline(self, batch: list[_Entry], *, check_scripts: bool) -> list[list[Any]]:
        """Send the batch as one pipeline; answers each operation's results."""
        async with self.redis.pipeline(transaction=False) as pipe:
            counts = [await operation(pipe) for operation, _, _ in batch]
            if self.ack is not None:
                pipe.execute_command(*self.ack.command())
            if not check_scripts:
                pipe.scripts.clear()  # known to be loaded: skip the SCRIPT EXISTS round trip
            results = await pipe.execute(raise_on_error=False)
        if self.ack is not None:
            self.ack.check(results.pop())
        spans, start = [], 0
        for count in counts:
            spans.append(results[start : start + count])
            start += count
        return spans

    async def _results(self, batch: list[_Entry]) -> list[list[Any]]:
        async def resend(lost: list[int]) -> list[list[Any]]:
            self._scripts_loaded = False
            return await self._pipeline([batch[i] for i in lost], check_scripts=True)

        spans = await self._pipeline(batch, check_scripts=not self._scripts_loaded)
        await resend_noscript(spans, resend)
        self._scripts_loaded = True
        return spans

    async def _send(self, batch: list[_Entry]) -> None:
        try:
            async with asyncio.timeout_at(min(entry[2] for entry in batch)):
                spans = await self._results(batch)
        except BaseException as exc:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else TimeoutError())
            if not isinstance(exc, Exception):
                raise
        else:
            self.batches += 1
            self.operations += len(batch)
            for (_, future, _), span in zip(batch, spans, strict=True):
                if not future.done():
                    future.set_result(span)
        finally:
            self._inflight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def close(self) -> None:
        """Wait for the pipelines on the wire (at most the timeout); refuse nothing queued."""
        while self._pending or self._tasks:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.timeout_s)
            else:
                self._flush()
                await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            log.debug("api_batcher_closed", batches=self.batches, operations=self.operations)
