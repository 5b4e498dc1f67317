"""Where the Redis server is now: the seam every connection asks each time it connects.

Every connection Conveyor opens (redis-py's pooled ones, built by ``conveyor.redis.connect``,
and the worker's lean ``conveyor.resp.RespConnection``, which takes its resolver from the
redis-py client it is made ``like``) holds an ``AddressResolver`` and asks it for an address
on every (re)connect. So a server that moved is found again by the next connect, with no
restart: a lost connection, a timeout or a ``READONLY`` reply drops the connection, and the
next command connects afresh.

- ``FixedAddress``: the one server of a ``redis://`` or ``rediss://`` URL.
- ``SentinelResolver``: asks the sentinels of a ``redis+sentinel://`` URL where the master is
  (``SENTINEL MASTER name``), trying each in turn and preferring the last one that answered.
  A master the sentinel sees as down (``s_down``, ``o_down``, ``disconnected``) is no answer:
  while there is no master, ``resolve`` raises ``NoMasterError`` at once (a ConnectionError,
  so callers treat it like Redis being away: the API answers 503 with Retry-After).

A resolver whose ``checks_role`` is true asks the connection to check, once connected, that the
server is a master (``ROLE``): a sentinel may still name a master that has just been demoted.
A resolver for Redis Cluster slot owners can be added beside these two.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import hiredis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from conveyor.redis_url import HostPort

#: One sentinel's question and answer, at most (connect, AUTH, SENTINEL MASTER).
SENTINEL_TIMEOUT_S = 1.0
#: Flags of ``SENTINEL MASTER`` that mean the master cannot take writes now.
DOWN_FLAGS = frozenset({"s_down", "o_down", "disconnected"})

Address = HostPort


class NoMasterError(RedisConnectionError):
    """Raised when no sentinel names a master that is up (a failover is under way, or the
    sentinels cannot be reached, or none knows the master's name)."""


class SentinelAuthError(AuthenticationError):
    """Raised when every sentinel refused the password (CONVEYOR_REDIS_SENTINEL_PASSWORD)."""


#: How a sentinel's refusal of the password is reported.
REFUSED = "refused the password"


class AddressResolver(Protocol):
    """Where to connect now; asked on every (re)connect."""

    #: Whether a new connection must check (ROLE) that the server is a master.
    checks_role: bool

    async def resolve(self) -> Address:
        """The server's address now; a ConnectionError when there is none."""
        ...


class FixedAddress:
    """One server at one address (a ``redis://`` or ``rediss://`` URL)."""

    checks_role = False

    def __init__(self, host: str, port: int) -> None:
        self.address = Address(host, port)

    async def resolve(self) -> Address:
        return self.address

    def __repr__(self) -> str:
        return f"FixedAddress({self.address})"


def tls_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """A client TLS context from redis-py's ``ssl_*`` options (from a URL's query string or a
    client's connection arguments: ssl_ca_certs, ssl_certfile, ssl_cert_reqs, ...)."""
    context = ssl.create_default_context(
        cafile=options.get("ssl_ca_certs"), capath=options.get("ssl_ca_path")
    )
    if options.get("ssl_certfile"):
        context.load_cert_chain(
            options["ssl_certfile"], options.get("ssl_keyfile"), options.get("ssl_password")
        )
    reqs = options.get("ssl_cert_reqs", "required")
    if reqs in (None, "none", ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        check = options.get("ssl_check_hostname", False)
        if isinstance(check, str):
            check = check.lower() in ("1", "true", "yes", "on")
        context.check_hostname = bool(check)
    return context


def _master_in(reply: Any) -> tuple[Address | None, str]:
    """The address a ``SENTINEL MASTER`` reply names when that master is up, else why not."""
    if isinstance(reply, Exception):
        return None, str(reply)
    if not isinstance(reply, list):
        return None, f"unexpected reply {reply!r}"
    state = dict(zip(reply[::2], reply[1::2], strict=False))
    flags = set(str(state.get("flags", "")).split(","))
    down = flags & DOWN_FLAGS
    if "master" not in flags or down:
        return None, f"the master is {','.join(sorted(down)) or 'not a master'}"
    try:
        return Address(str(state["ip"]), int(state["port"])), ""
    except (KeyError, ValueError):
        return None, f"unexpected reply {reply!r}"


class SentinelResolver:
    """The master that the sentinels name ``master_name``."""

    checks_role = True

    def __init__(
        self,
        sentinels: Sequence[Address],
        master_name: str,
        *,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = SENTINEL_TIMEOUT_S,
    ) -> None:
        if not sentinels:
            raise ValueError("SentinelResolver needs at least one sentinel")
        self.sentinels = list(sentinels)
        self.master_name = master_name
        self.password = password
        self.tls = tls
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        hosts = ",".join(str(s) for s in self.sentinels)
        return f"SentinelResolver({hosts}/{self.master_name})"

    async def resolve(self) -> Address:
        problems: dict[str, list[str]] = {}  # reason -> the sentinels that gave it
        for sentinel in list(self.sentinels):
            try:
                reply = await self._ask(sentinel)
            except (OSError, TimeoutError, RedisConnectionError) as exc:
                problems.setdefault(str(exc) or type(exc).__name__, []).append(str(sentinel))
                continue
            address, why = _master_in(reply)
            if address is None:
                problems.setdefault(why, []).append(str(sentinel))
                continue
            if self.sentinels[0] != sentinel:  # ask the one that knew first next time
                self.sentinels.remove(sentinel)
                self.sentinels.insert(0, sentinel)
            return address
        reasons = "; ".join(f"{', '.join(hosts)}: {why}" for why, hosts in problems.items())
        if len(problems) == 1 and next(iter(problems)).startswith(REFUSED):
            raise SentinelAuthError(f"sentinels {reasons}; check CONVEYOR_REDIS_SENTINEL_PASSWORD")
        raise NoMasterError(
            f"no master named {self.master_name!r} is up according to the sentinels ({reasons})"
        )

    async def _ask(self, sentinel: Address) -> Any:
        """``SENTINEL MASTER name`` of one sentinel (after AUTH with its own password)."""
        commands: list[tuple[Any, ...]] = []
        if self.password:
            commands.append(("AUTH", self.password))
        commands.append(("SENTINEL", "MASTER", self.master_name))
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await asyncio.open_connection(
                sentinel.host, sentinel.port, ssl=self.tls
            )
            try:
                writer.write(b"".join(hiredis.pack_command(cast(Any, c)) for c in commands))
                replies = await _read_replies(reader, len(commands))
            finally:
                writer.transport.abort()
        if self.password and isinstance(replies[0], Exception):
            raise RedisConnectionError(f"{REFUSED}: {replies[0]}")
        if isinstance(replies[-1], Exception) and str(replies[-1]).startswith("NOAUTH"):
            raise RedisConnectionError(f"{REFUSED} (none given): {replies[-1]}")
        return replies[-1]


async def _read_replies(reader: asyncio.StreamReader, count: int) -> list[Any]:
    parser = hiredis.Reader(encoding="utf-8", errors="replace")
    replies: list[Any] = []
    while len(replies) < count:
        data = await reader.read(65536)
        if not data:
            raise RedisConnectionError("the sentinel closed the connection")
        parser.feed(data)
        reply = parser.gets()
        while reply is not False:
            replies.append(reply)
            reply = parser.gets()
    return replies
