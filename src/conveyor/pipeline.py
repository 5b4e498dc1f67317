"""Per-tick pipelining: Redis calls made in the same event-loop tick go out as one write.

Two batchers do this, and they stay two because they answer different callers:

- ``AutoPipeline`` (here) is the worker's and ``QueueClient``'s hot path: single script calls
  (and short runs of raw commands) on one lean ``conveyor.resp`` connection, written without
  waiting for earlier replies, replies handed to callbacks as they are parsed, small eager
  batches so Redis and the worker keep each other busy. A call waits as long as the
  connection's timeout allows; nothing is ever refused.
- ``PipelineBatcher`` (``conveyor.services.api.batcher``) is the HTTP API's: each request's
  operation is a run of commands (a HEXISTS beside the add script, a WAIT after the batch for
  replica acks), pipelines go out on up to ``api_redis_pipelines`` lean connections at once,
  and every request has a deadline and can be refused (503) when too many wait: the API
  promises an answer within ``CONVEYOR_API_REDIS_TIMEOUT_S`` of each request's arrival (a
  pipeline whose deadline passes fails alone and its connection is dropped), while
  ``AutoPipeline``'s timeout is its connection's (the oldest reply awaited), and when it fires
  every call in flight fails with the connection.

What both share is the rule for scripts Redis forgot (a restart, a failover, SCRIPT FLUSH):
a call answered NOSCRIPT did not run, so it is sent once more after its script is loaded; a
second NOSCRIPT is answered as the error it is. ``resend_noscript`` is that rule for a sender
that awaits its replies (``AutoPipeline.transaction``); ``AutoPipeline.call`` and the API's
batcher apply it when the replies come in instead, writing SCRIPT LOAD and the calls again in
one write, because their hot paths never await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from conveyor.resp import Command, RespConnection, collect, ignore_reply, pack_evalsha, packed


def met_noscript(replies: Iterable[Any]) -> bool:
    """Whether any of ``replies`` is NOSCRIPT: that call did not run."""
    return any(isinstance(reply, NoScriptError) for reply in replies)


def script_loads(scripts: Iterable[AsyncScript]) -> list[tuple[Any, ...]]:
    """SCRIPT LOAD commands for ``scripts``, to send before calling them again by EVALSHA."""
    return [("SCRIPT", "LOAD", script.script) for script in scripts]


async def resend_noscript(
    spans: list[list[Any]], resend: Callable[[list[int]], Awaitable[Sequence[list[Any]]]]
) -> list[list[Any]]:
    """The NOSCRIPT rule for replies grouped by caller (``spans``): the indexes of the spans
    that met NOSCRIPT go to ``resend`` (which loads the scripts and sends those callers'
    commands again), and its spans replace them. Answers ``spans``, updated in place."""
    lost = [index for index, span in enumerate(spans) if met_noscript(span)]
    if lost:
        for index, span in zip(lost, await resend(lost), strict=True):
            spans[index] = span
    return spans


#: A batch goes out as soon as it has this many calls instead of at the end of the tick. When
#: all replies of a batch come back together, the jobs they wake would otherwise all make
#: their next call in the same tick and the whole worker would move in lockstep with Redis,
#: each idle while the other works. Small batches keep both busy (measured: 10,300 -> 20,100
#: no-op jobs/s at concurrency 10, same Redis CPU per job; see bench/profile.py).
EAGER_BATCH = 4


class AutoPipeline:
    """Sends the script calls made in the same event-loop tick as one write, pipelined.

    Many jobs finishing at once each make one script call; sent one by one they cost a round
    trip and a syscall each. Here the calls of one tick go out together at the end of the tick
    on one lean connection (``conveyor.resp``) without waiting for the replies of earlier
    batches, so Redis works on one batch while the worker handles the last one. A lone call
    still goes out at the end of the current tick: an idle worker adds no latency (and an
    ``eager`` call, an enqueue's, goes out at once when nothing is in flight). Not
    transactional: each call succeeds or fails on its own.
    """

    def __init__(self, connection: RespConnection) -> None:
        self.connection = connection
        #: Script calls (script, keys, args, future) and raw command runs (None, commands,
        #: [], future) waiting for the end of the tick.
        self._pending: list[_Item] = []
        self._scheduled = False
        self._connecting = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or use from a new event loop after the last one finished: whatever was
        pending or scheduled belonged to the dead loop."""
        self._loop = loop
        self._pending = []
        self._scheduled = False
        self._connecting = False
        self.connection.adopt_loop(loop)

    def call(
        self, script: AsyncScript, keys: list[Any], args: list[Any], *, eager: bool = False
    ) -> asyncio.Future[Any]:
        """Queue a script call for the end of the tick; answers its reply (a future).

        ``eager``: write it at once when the connection is idle (connected, nothing pending,
        no reply awaited): a caller that awaits each call in turn (an enqueue loop) then
        waits for no tick, and Redis starts on it while this process is still winding down
        the call. A call made while others are in flight is batched as usual.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        item = (script, keys, args, future)
        if loop is not self._loop:
            self._adopt(loop)
        if eager and not self._pending and self.connection.idle:
            self._send([item])
            return future
        return self._queue(item, loop)

    def commands(self, commands: Sequence[Command]) -> asyncio.Future[Any]:
        """Send ``commands`` (words, or bytes packed already) back to back in the next batch;
        answers all their replies (an error reply as an instance). A failed connection fails
        the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not commands:
            future.set_result([])
            return future
        return self._queue((None, list(commands), [], future), loop)

    def _queue(self, item: _Item, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        future = item[3]
        if loop is not self._loop:
            self._adopt(loop)
        self._pending.append(item)
        if len(self._pending) >= EAGER_BATCH and not self._connecting and self.connection.connected:
            batch, self._pending = self._pending, []
            self._send(batch)
            return future
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if self._connecting or not self._pending:
            return  # the connecting task sends what is pending once connected
        if not self.connection.connected:
            self._connecting = True
            task = asyncio.ensure_future(self._connect_then_flush())
            task.add_done_callback(_consume_exception)
            return
        batch, self._pending = self._pending, []
        self._send(batch)

    async def _connect_then_flush(self) -> None:
        try:
            await self.connection.connect()
        except BaseException as exc:
            batch, self._pending = self._pending, []
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._connecting = False
        batch, self._pending = self._pending, []
        if batch:
            self._send(batch)

    def _send(self, batch: list[_Item]) -> None:
        chunks: list[bytes] = []
        callbacks: list[Callable[[Any], None]] = []
        sent: list[_Item] = []
        for item in batch:
            script, keys, args, future = item
            try:
                if script is None:
                    chunk = [packed(c) for c in keys]
                else:
                    chunk = [pack_evalsha(script.sha, keys, args)]
            except Exception as exc:  # e.g. a None or a lone surrogate: only this call fails
                if not future.done():
                    future.set_exception(exc)
                continue
            chunks += chunk
            if script is None:
                callbacks += collect(len(chunk), future)
            else:
                callbacks.append(self._on_reply(item, first_try=True))
            sent.append(item)
        if not chunks:
            return
        try:
            self.connection.send_packed(chunks, callbacks)
        except Exception as exc:
            for *_, future in sent:
                if not future.done():
                    future.set_exception(exc)

    async def transaction(
        self, calls: list[tuple[AsyncScript, list[Any], list[Any]]], *, by_sha: int = 0
    ) -> list[Any]:
        """Run script calls in one MULTI/EXEC, written in one piece on the hot connection;
        answers EXEC's replies (an error reply as an instance, not raised).

        The first ``by_sha`` calls (at most 1) go by EVALSHA, the rest by EVAL with the
        script's text (never NOSCRIPT: put there the calls that check what the first one did).
        When Redis forgot the EVALSHA script, it is loaded and the transaction runs again; with
        two EVALSHA calls the first could run twice (Redis runs the rest of a MULTI after a
        NOSCRIPT), hence the limit.
        """
        if by_sha > 1:
            raise ValueError("transaction: at most one call by EVALSHA")
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        for index, (script, keys, args) in enumerate(calls):
            if index < by_sha:
                commands.append(_evalsha(script, keys, args))
            else:
                commands.append(("EVAL", script.script, len(keys), *keys, *args))
        commands.append(("EXEC",))

        async def run() -> list[Any]:
            replies = await self.commands(commands)
            for reply in replies[:-1]:
                if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                    raise reply  # refused while queueing: EXEC discards the transaction
            result = replies[-1]
            if isinstance(result, Exception):
                raise result
            return list(result)

        async def again(lost: list[int]) -> list[list[Any]]:
            await self.commands(script_loads(script for script, *_ in calls[:by_sha]))
            return [await run()]

        (result,) = await resend_noscript([await run()], again)
        return result

    def _on_reply(self, item: _Item, *, first_try: bool) -> Callable[[Any], None]:
        future = item[3]

        def done(reply: Any) -> None:
            if future.done():
                return
            if isinstance(reply, NoScriptError) and first_try:
                # Redis restarted or was flushed: load the script and call it again, in the same
                # write (Redis runs them in order).
                script, keys, args, _ = item
                assert script is not None
                self.connection.send(
                    [*script_loads([script]), _evalsha(script, keys, args)],
                    [ignore_reply, self._on_reply(item, first_try=False)],
                )
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

        return done


_Item = tuple[AsyncScript | None, list[Any], list[Any], asyncio.Future[Any]]


def _evalsha(script: AsyncScript, keys: list[Any], args: list[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
