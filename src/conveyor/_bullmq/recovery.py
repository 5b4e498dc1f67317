"""Recovering a dead worker's jobs in seconds instead of a lock's lifetime: workers' heartbeats
on the queue (Conveyor's own keys, ``conveyor.keys.heartbeats``), which of them still have a
connection open, and the release of the jobs whose lock a dead worker still holds
(``lua/release_worker.lua``, BullMQ's stalled-job rules, with the paused-layout guard).

Who decides that a worker is dead is ``conveyor.worker.heartbeat`` (a peer) or the
supervisor of ``conveyor worker --processes N`` (which reaped the process).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from conveyor import keys, lua
from conveyor._bullmq.base import QueueBase
from conveyor._bullmq.scripts import with_paused_layout

#: The meta key's position in release_worker.lua's KEYS (for the paused-layout guard).
_RELEASE_META_KEY = 4
#: Connection names a worker's connections carry: BullMQ's worker name on the one that waits
#: for jobs (``{prefix}:{b64(queue)}:w:{name}``, listed by Node's getWorkers), and this one on
#: the hot path that also sends the heartbeats (not listed as a second worker).
HEARTBEAT_CONNECTION_TAG = "hb"


@dataclass(frozen=True)
class Beat:
    """What one heartbeat answered: Redis's time, and (for the call that took the judge lease)
    the peers silent for longer than asked, with their last beat."""

    now_ms: int
    silent: list[tuple[str, int]]


class QueueRecovery(QueueBase):
    """The heartbeat and release calls of ``BullQueue``."""

    def _script(self, name: str, source: str) -> None:
        if name not in self._scripts:
            self._scripts[name] = self.redis.register_script(source)

    def heartbeat_connection_name(self, worker_name: str) -> str:
        encoded = base64.b64encode(self.name.encode()).decode()
        return f"{self.prefix}:{encoded}:{HEARTBEAT_CONNECTION_TAG}:{worker_name}"

    async def heartbeat(
        self, worker_name: str, *, silent_after_ms: int, lease_ms: int, forget_after_ms: int
    ) -> Beat:
        """Beat for ``worker_name``; see ``lua/heartbeat.lua``."""
        self._script("conveyorHeartbeat", lua.source("heartbeat"))
        raw = await self._run(
            "conveyorHeartbeat",
            [keys.heartbeats(self.prefix, self.name), keys.heartbeat_judge(self.prefix, self.name)],
            [worker_name, silent_after_ms, lease_ms, forget_after_ms],
            None,
        )
        if isinstance(raw, Exception):
            raise raw
        silent = [
            (str(raw[i]), int(float(raw[i + 1])))
            for i in range(1, len(raw) - 1, 2)
            if str(raw[i]) != worker_name
        ]
        return Beat(now_ms=int(raw[0]), silent=silent)

    async def leave(self, worker_name: str) -> None:
        """Forget ``worker_name``'s heartbeat (it stopped cleanly)."""
        await self.redis.zrem(keys.heartbeats(self.prefix, self.name), worker_name)

    async def connected_workers(self) -> set[str]:
        """Names of the workers of this queue with a connection open to Redis now (CLIENT
        LIST, on the hot path when there is one: the same server as the queue's keys)."""
        if self._auto is not None:
            (reply,) = await self._auto.commands([("CLIENT", "LIST", "TYPE", "normal")])
            if isinstance(reply, Exception):
                raise reply
            names = [
                field[5:]
                for line in str(reply).splitlines()
                for field in line.split(" ")
                if field.startswith("name=")
            ]
        else:
            names = [str(c.get("name", "")) for c in await self.redis.client_list(_type="normal")]
        encoded = base64.b64encode(self.name.encode()).decode()
        starts = (
            f"{self.prefix}:{encoded}:w:",
            f"{self.prefix}:{encoded}:{HEARTBEAT_CONNECTION_TAG}:",
        )
        found: set[str] = set()
        for name in names:
            for start in starts:
                if name.startswith(start):
                    found.add(name[len(start) :])
        return found

    async def release_worker(
        self,
        worker_name: str,
        *,
        max_stalled_count: int,
        seen_beat_ms: int | None,
        forget: bool,
    ) -> list[str] | None:
        """Put back the jobs whose lock ``worker_name`` still holds, counted as stalls (see
        ``lua/release_worker.lua``). With ``seen_beat_ms``, only if the worker has not beaten
        since (None answered otherwise); without, the caller knows it is dead."""
        self._script(
            "conveyorReleaseWorker",
            with_paused_layout(lua.source("release_worker"), _RELEASE_META_KEY),
        )
        script_keys = self._keys(
            "active", "wait", "stalled", "meta", "paused", "marker", "events", "repeat"
        )
        script_keys.append(keys.heartbeats(self.prefix, self.name))
        args: list[Any] = [
            self.base,
            worker_name,
            max_stalled_count,
            "" if seen_beat_ms is None else seen_beat_ms,
            "1" if forget else "0",
        ]
        raw = await self._run("conveyorReleaseWorker", script_keys, args, None)
        if isinstance(raw, Exception):
            raise raw
        if raw is None:
            return None
        return [str(job_id) for job_id in raw]
