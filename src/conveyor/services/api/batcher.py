"""Send the Redis commands of requests that arrive together in one pipelined write.

Under load many enqueue requests are ready in the same event-loop tick. Instead of one
round trip each, the batcher gathers every operation submitted during a tick and writes them
as one non-transactional pipeline on a lean connection (``conveyor.resp``: hiredis packs and
parses in C, each reply handed over as it is parsed); each request then gets its own
commands' replies. A bad job cannot fail its neighbours: validation happened before, and
Redis answers each command on its own (an error reply comes back as its exception). At most
``max_inflight`` pipelines are on the wire at once (one connection each); what arrives
meanwhile waits for the next one, so batches grow with the load. An operation that finds
nothing on the wire and nothing waiting goes out at once, without waiting for the end of the
tick: a lone request pays no batching delay.

Commands call scripts by EVALSHA. Operations whose commands meet NOSCRIPT (Redis restarted,
failed over or flushed its scripts) are sent again once, after their scripts are loaded, on
the same connection; a second NOSCRIPT is answered as the error it is. The rule is shared with
the worker's ``AutoPipeline``; why these are two batchers: ``conveyor.pipeline``.

Every operation is answered within ``timeout_s`` of its submission: it carries a deadline;
one that expires before it is sent fails (TimeoutError) and is never sent, and a pipeline on
the wire fails when the earliest deadline among its operations passes (its connection is
dropped, as redis-py drops a connection whose reply it stopped waiting for, so no late reply
is ever taken for another pipeline's).

With ``CONVEYOR_ENQUEUE_REPLICAS`` each pipeline ends with ``WAIT`` (``conveyor.replication``):
its operations are answered once the replicas hold them, or all fail with ReplicationError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.log import get_logger
from conveyor.pipeline import met_noscript, script_loads
from conveyor.replication import ReplicaAck
from conveyor.resp import Command, RespConnection, packed
from conveyor.services.api.problems import OverloadedError

log = get_logger("conveyor.api")


class _Entry:
    """One operation: its commands (packed), the scripts they call, its answer, its deadline."""

    __slots__ = ("commands", "deadline", "future", "packed", "scripts")

    def __init__(
        self,
        commands: Sequence[Command],
        scripts: Sequence[AsyncScript],
        future: asyncio.Future[list[Any]],
        deadline: float,
    ) -> None:
        self.commands = commands
        self.packed = [packed(command) for command in commands]
        self.scripts = scripts
        self.future = future
        self.deadline = deadline


class _Batch:
    """A pipeline: its operations, its connection, and its deadline (its operations'
    earliest)."""

    __slots__ = ("connection", "deadline", "entries", "on_wire", "resent")

    def __init__(self, entries: list[_Entry], connection: RespConnection) -> None:
        self.entries = entries
        self.connection = connection
        self.deadline = min(entry.deadline for entry in entries)
        #: Written and neither answered nor failed yet (the watchdog looks after it).
        self.on_wire = False
        #: Sent again after NOSCRIPT: a second NOSCRIPT is answered as it is.
        self.resent = False


class PipelineBatcher:
    """Gathers the operations of one event-loop tick into one pipelined write."""

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
        wait: Command | None = None if ack is None else ack.command()
        self._wait = None if wait is None else packed(wait)
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._pending: list[_Entry] = []
        self._scheduled = False
        #: Pipelines on the wire or connecting (each holds one connection).
        self._inflight = 0
        #: Connections not carrying a pipeline now (connected or not).
        self._free: list[RespConnection] = []
        self._connections: list[RespConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Pipelines on the wire, and the one timer that fails those past their deadline.
        self._wire: set[_Batch] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        #: Set whenever the last pipeline on the wire is answered (for ``close``).
        self._idle: asyncio.Event | None = None
        #: Pipelines answered and operations carried, for the logs and the benchmark.
        self.batches = 0
        self.operations = 0

    async def run(
        self, commands: Sequence[Command], scripts: Sequence[AsyncScript] = ()
    ) -> list[Any]:
        """Send ``commands`` with the others of this tick; answers their replies in order (an
        error reply as its exception). ``scripts``: those the commands call by EVALSHA."""
        if len(self._pending) >= self.max_pending:
            raise OverloadedError(
                f"{len(self._pending)} enqueues are already waiting for Redis; try again later"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append(_Entry(commands, scripts, future, loop.time() + self.timeout_s))
        if self._inflight == 0 and len(self._pending) == 1 and self._free:
            self._flush()  # nothing on the wire, nothing waiting: no reason to wait
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _connection(self) -> RespConnection:
        if self._free:
            return self._free.pop()
        connection = RespConnection.like(self.redis)
        self._connections.append(connection)
        return connection

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._pending and self._inflight < self.max_inflight:
            batch = []
            for entry in self._pending[: self.max_batch]:
                if entry.future.done():
                    continue
                if entry.deadline <= now:
                    entry.future.set_exception(TimeoutError("Redis did not take the job in time"))
                    continue
                batch.append(entry)
            del self._pending[: self.max_batch]
            if not batch:
                continue
            self._inflight += 1
            connection = self._connection()
            if connection.connected:
                self._send(_Batch(batch, connection), loop)
            else:
                self._spawn(self._connect_then_send(_Batch(batch, connection)))

    async def _connect_then_send(self, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(batch.deadline):
                await batch.connection.connect()
        except BaseException as exc:
            self._fail(batch, exc if isinstance(exc, Exception) else TimeoutError())
            if not isinstance(exc, Exception):
                raise
            return
        self._send(batch, loop)

    def _send(self, batch: _Batch, loop: asyncio.AbstractEventLoop) -> None:
        """Write the batch's commands (and WAIT) in one write; the last reply settles it."""
        chunks = [chunk for entry in batch.entries for chunk in entry.packed]
        if self._wait is not None:
            chunks.append(self._wait)
        replies: list[Any] = []
        one = replies.append

        def last(reply: Any) -> None:  # called as the reply is parsed: no loop round
            one(reply)
            self._answered(batch, replies)

        try:
            batch.connection.send_packed(chunks, [*([one] * (len(chunks) - 1)), last])
        except Exception as exc:  # lost between the check and the write
            self._fail(batch, exc)
            return
        batch.on_wire = True
        self._wire.add(batch)
        if self._watchdog is None:
            self._watchdog = loop.call_at(batch.deadline, self._watch, loop)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the pipelines whose deadline has passed; look again at the next deadline.
        One timer for all pipelines, moved only when it fires (a pipeline answered in time,
        nearly all of them, costs no timer of its own)."""
        self._watchdog = None
        now = loop.time()
        for batch in [b for b in self._wire if b.deadline <= now]:
            self._fail(batch, TimeoutError("Redis did not answer in time"))
        if self._wire:
            due = min(batch.deadline for batch in self._wire)
            self._watchdog = loop.call_at(due, self._watch, loop)

    def _answered(self, batch: _Batch, replies: list[Any]) -> None:
        if not batch.on_wire:
            return  # expired: the batch failed and its connection was dropped
        batch.on_wire = False
        self._wire.discard(batch)
        for reply in replies:
            if isinstance(reply, RedisConnectionError | RedisTimeoutError):
                self._fail(batch, reply)  # the connection failed before this reply
                return
        self._settle(batch, replies, 0)

    def _settle(self, batch: _Batch, replies: list[Any], start: int) -> None:
        """Hand each operation its replies (from ``start`` on); send again those that met
        NOSCRIPT, else the batch is done and its connection free."""
        if self.ack is not None:
            try:
                self.ack.check(replies.pop())
            except Exception as failure:
                self._fail(batch, failure, drop=False)
                return
        lost: list[_Entry] = []
        for entry in batch.entries:
            end = start + len(entry.commands)
            span = replies[start:end]
            start = end
            if not batch.resent and met_noscript(span):
                lost.append(entry)
            elif not entry.future.done():
                entry.future.set_result(span)
        if not batch.resent:  # a batch sent again was counted with its first try
            self.batches += 1
        self.operations += len(batch.entries) - len(lost)
        if not lost:
            self._release(batch.connection)
            return
        # Scripts forgotten: load them and send those operations again, in one write, on the
        # same connection (the slot is still this batch's).
        again = _Batch(lost, batch.connection)
        again.resent = True
        self._spawn(self._resend(again))

    async def _resend(self, batch: _Batch) -> None:
        scripts = {script.sha: script for entry in batch.entries for script in entry.scripts}
        loads = script_loads(scripts.values())
        commands = [*loads, *(command for entry in batch.entries for command in entry.commands)]
        if self.ack is not None:
            commands.append(self.ack.command())
        try:
            async with asyncio.timeout_at(batch.deadline):
                replies = await batch.connection.execute_many(commands)
        except BaseException as exc:
            self._fail(batch, exc if isinstance(exc, Exception) else TimeoutError())
            if not isinstance(exc, Exception):
                raise
            return
        self._settle(batch, list(replies), len(loads))

    def _fail(self, batch: _Batch, exc: Exception, *, drop: bool = True) -> None:
        """Fail the batch's operations with ``exc``; with ``drop``, close its connection and
        forget it (replies may still come on it, and they must never be taken for another
        batch's: the next batch opens a new one)."""
        if batch.on_wire:
            batch.on_wire = False
            self._wire.discard(batch)
        for entry in batch.entries:
            if not entry.future.done():
                entry.future.set_exception(exc)
        connection = batch.connection
        if drop:
            with contextlib.suppress(ValueError):
                self._connections.remove(connection)
            self._spawn(connection.close())
        self._release(None if drop else connection)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that ``close`` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, connection: RespConnection | None) -> None:
        if connection is not None:
            self._free.append(connection)
        self._inflight -= 1
        if self._inflight == 0 and self._idle is not None:
            self._idle.set()
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def close(self) -> None:
        """Wait for the pipelines on the wire (at most the timeout); refuse nothing queued;
        then close the connections."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s * 2):
                while self._pending or self._inflight or self._tasks:
                    if self._pending and self._inflight < self.max_inflight:
                        self._flush()
                    self._idle = asyncio.Event()
                    if self._inflight:
                        await self._idle.wait()
                    elif self._tasks:
                        await asyncio.wait(set(self._tasks))
                    else:
                        await asyncio.sleep(0)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for connection in self._connections:
            await connection.close()
        with contextlib.suppress(Exception):
            log.debug("api_batcher_closed", batches=self.batches, operations=self.operations)
