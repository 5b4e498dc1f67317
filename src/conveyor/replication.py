"""Replica-acknowledged writes: an enqueue is answered only once N replicas hold the job.

Redis replicates asynchronously: a master that dies after answering a write, before its
replicas read it, takes the write with it, and a failover promotes a replica without it.
``WAIT n timeout`` blocks the *connection that wrote* until ``n`` replicas acknowledged
everything that connection wrote (or the timeout passed) and answers how many did. So:

- where the job is written on a connection we can keep (the API's batched pipeline, the
  client's single enqueue), ``WAIT`` goes at the end of the same pipeline (``command``);
- where it is written in a MULTI whose connection redis-py hands back to its pool (the
  idempotent and bulk enqueues), the MULTI also writes a *receipt* key, and ``confirm``
  then sends ``PEXPIRE receipt`` (a write, only where the receipt exists) and ``WAIT`` on any
  connection: ``PEXPIRE`` answering 1 proves this server holds the MULTI, and ``WAIT``
  covers everything this server streamed up to the ``PEXPIRE``, the MULTI included, even if
  a failover came in between;
- a retried request whose jobs exist already wrote nothing: ``confirm_existing`` checks the
  jobs are on the server, then writes a receipt and waits for it the same way.

Fewer acknowledgements than asked raises ``ReplicationError`` (the API's 503): the job is on
the master but could be lost by a failover now; the caller retries (an Idempotency-Key or a
jobId makes that safe). With ``CONVEYOR_ENQUEUE_REPLICAS=0`` (the default) none of this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from conveyor.config import Settings
from conveyor.errors import ReplicationError

#: How long a receipt lives (ms): it only has to outlast the request.
RECEIPT_TTL_MS = 300_000


@dataclass(frozen=True)
class ReplicaAck:
    """Acknowledge a write only once ``replicas`` replicas hold it, waiting ``timeout_ms``."""

    replicas: int
    timeout_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaAck | None:
        """CONVEYOR_ENQUEUE_REPLICAS as a ReplicaAck; None when it is 0."""
        if settings.enqueue_replicas <= 0:
            return None
        return cls(settings.enqueue_replicas, settings.enqueue_replicas_timeout_ms)

    def command(self) -> tuple[str, int, int]:
        """The ``WAIT`` to send after the writes, on their connection."""
        return ("WAIT", self.replicas, self.timeout_ms)

    def check(self, acknowledged: Any) -> None:
        """ReplicationError unless ``WAIT``'s reply counts enough replicas."""
        if isinstance(acknowledged, Exception):
            raise ReplicationError(
                f"could not learn whether replicas hold the job: {acknowledged}"
            ) from acknowledged
        if int(acknowledged) < self.replicas:
            raise ReplicationError(
                f"only {int(acknowledged)} of {self.replicas} replica(s) acknowledged the job "
                f"within {self.timeout_ms} ms; the master has it but a failover now could lose "
                "it. Send it again (an Idempotency-Key or jobId makes that safe)"
            )

    async def confirm(self, redis: Redis, receipt: str) -> None:
        """After a MULTI that wrote ``receipt``: wait until the replicas hold it."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.pexpire(receipt, RECEIPT_TTL_MS)
            pipe.execute_command(*self.command())
            present, acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(present, Exception):
            raise ReplicationError(f"could not check the write: {present}") from present
        if not present:
            raise ReplicationError(
                "the master that took the job is gone and its successor does not have it "
                "(a failover lost it); send it again"
            )
        self.check(acknowledged)

    async def confirm_existing(self, redis: Redis, job_keys: list[str], receipt: str) -> None:
        """For jobs that existed before this request: check they are on the server, write a
        receipt after them and wait until the replicas hold it (and so the jobs)."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists(*job_keys)
            pipe.set(receipt, 1, px=RECEIPT_TTL_MS)
            pipe.execute_command(*self.command())
            found, _, acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(found, Exception):
            raise ReplicationError(f"could not check the jobs: {found}") from found
        if int(found) != len(job_keys):
            raise ReplicationError(
                "the jobs this key made are not on the master now (a failover lost them, or "
                "they were removed); send the request again"
            )
        self.check(acknowledged)
