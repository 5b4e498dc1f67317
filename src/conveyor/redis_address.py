"""Where the Redis server is now: the seam every connection asks each time it connects.

Every connection Conveyor opens (redis-py's pooled ones, built by ``conveyor.redis.connect``,
and the worker's lean ``conveyor.resp.RespConnection``, which takes its resolver from the
redis-py client it is made ``like``) holds an ``AddressResolver`` and asks it for an address
on every (re)connect. So a server that moved is found again by the next connect, with no
restart: a lost connection, a timeout or a ``READONLY`` reply drops the connection, and the
next command connects afresh.

- ``FixedAddress``: the one server of a ``redis://`` or ``rediss://`` URL.
- ``SentinelResolver``: asks the sentinels of a ``redis+sentinel://`` URL where the master is
  (``SENTINEL GET-MASTER-ADDR-BY-NAME``, with ``SENTINEL MASTER`` for its state), trying each
  in turn and preferring the last one that answered.
  A master the sentinel sees as down (``s_down``, ``o_down``) is no answer:
  while there is no master, ``resolve`` raises ``NoMasterError`` at once (a ConnectionError,
  so callers treat it like Redis being away: the API answers 503 with Retry-After).

A resolver whose ``checks_role`` is true asks the connection to check, once connected, that the
server is a master (``ROLE``): a sentinel may still name a master that has just been demoted.
- ``ClusterSlotResolver``: asks the nodes of a ``redis+cluster://`` URL (and those they told
  of) which master owns one hash slot (``CLUSTER SLOTS``): a queue's connections go to the
  master of its slot, and after a failover or a slot's move (a ``MOVED`` reply drops the
  connection) the next connect finds the new owner.
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
#: Flags of ``SENTINEL MASTER`` that mean the master is down. (Not ``disconnected``: a
#: sentinel shows it for a moment after every switch, before its link to the new master is up;
#: a connection to a server that is not the master is refused by the ROLE check anyway.)
DOWN_FLAGS = frozenset({"s_down", "o_down"})

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


def _master_in(replies: list[Any]) -> tuple[Address | None, str]:
    """From one sentinel's ``SENTINEL GET-MASTER-ADDR-BY-NAME`` and ``SENTINEL MASTER``
    replies: the master's address, or why there is none now.

    The address comes from GET-MASTER-ADDR-BY-NAME, as Redis's guidelines for Sentinel
    clients say: during a failover it names the promoted replica as soon as it is promoted,
    before SENTINEL MASTER switches. SENTINEL MASTER's flags tell a master that is down and
    not yet replaced (same address, ``s_down``/``o_down``): no use connecting to it."""
    named, state_reply = replies
    if isinstance(named, Exception):
        return None, str(named)
    if not named:
        return None, "it knows no master by that name"
    try:
        address = Address(str(named[0]), int(named[1]))
    except (IndexError, TypeError, ValueError):
        return None, f"unexpected reply {named!r}"
    if isinstance(state_reply, list):
        state = dict(zip(state_reply[::2], state_reply[1::2], strict=False))
        down = set(str(state.get("flags", "")).split(",")) & DOWN_FLAGS
        same = (str(state.get("ip")), str(state.get("port"))) == (address.host, str(address.port))
        if down and same:
            return None, f"the master is {','.join(sorted(down))}"
    return address, ""


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
            _to_front(self.sentinels, sentinel)  # ask the one that knew first next time
            return address
        reasons = "; ".join(f"{', '.join(hosts)}: {why}" for why, hosts in problems.items())
        if len(problems) == 1 and next(iter(problems)).startswith(REFUSED):
            raise SentinelAuthError(f"sentinels {reasons}; check CONVEYOR_REDIS_SENTINEL_PASSWORD")
        raise NoMasterError(
            f"no master named {self.master_name!r} is up according to the sentinels ({reasons})"
        )

    async def _ask(self, sentinel: Address) -> list[Any]:
        """One sentinel's GET-MASTER-ADDR-BY-NAME and MASTER replies for the master's name
        (after AUTH with the sentinels' own password), in one round trip."""
        commands: list[tuple[Any, ...]] = []
        if self.password:
            commands.append(("AUTH", self.password))
        commands.append(("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name))
        commands.append(("SENTINEL", "MASTER", self.master_name))
        replies = await _one_round_trip(sentinel, commands, self.tls, self.timeout_s)
        if self.password and isinstance(replies[0], Exception):
            raise RedisConnectionError(f"{REFUSED}: {replies[0]}")
        if isinstance(replies[-2], Exception) and str(replies[-2]).startswith("NOAUTH"):
            raise RedisConnectionError(f"{REFUSED} (none given): {replies[-2]}")
        return replies[-2:]


def _slot_owner(reply: Any, slot: int, asked: Address) -> tuple[Address | None, list[Address]]:
    """From a ``CLUSTER SLOTS`` reply: the master of ``slot`` (None if no range holds it), and
    every node the reply names."""
    if not isinstance(reply, list):
        return None, []
    owner: Address | None = None
    nodes: list[Address] = []
    for entry in reply:
        if not isinstance(entry, list) or len(entry) < 3:
            continue
        named = [
            Address(str(node[0]) or asked.host, int(node[1]))
            for node in entry[2:]
            if isinstance(node, list) and len(node) >= 2
        ]
        nodes += named
        if named and int(entry[0]) <= slot <= int(entry[1]):
            owner = named[0]
    return owner, nodes


class ClusterSlotResolver:
    """The master that owns ``slot`` in the Redis Cluster the ``nodes`` belong to."""

    checks_role = True

    def __init__(
        self,
        nodes: Sequence[Address],
        slot: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = SENTINEL_TIMEOUT_S,
    ) -> None:
        if not nodes:
            raise ValueError("ClusterSlotResolver needs at least one node")
        self.nodes = list(dict.fromkeys(nodes))
        self.slot = slot
        self.username = username
        self.password = password
        self.tls = tls
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ClusterSlotResolver({','.join(str(n) for n in self.nodes)}, slot {self.slot})"

    async def resolve(self) -> Address:
        problems: list[str] = []
        for node in list(self.nodes):
            try:
                reply = await self._ask(node)
            except (OSError, TimeoutError, RedisConnectionError) as exc:
                problems.append(f"{node}: {type(exc).__name__}: {exc}")
                continue
            owner, named = _slot_owner(reply, self.slot, node)
            for other in named:  # nodes added or promoted since the URL was written
                if other not in self.nodes:
                    self.nodes.append(other)
            if owner is None:
                problems.append(f"{node}: no master owns slot {self.slot}")
                continue
            _to_front(self.nodes, node)  # ask the one that answered first next time
            return owner
        raise NoMasterError(
            f"no cluster node names a master for slot {self.slot} ({'; '.join(problems)})"
        )

    async def _ask(self, node: Address) -> Any:
        """``CLUSTER SLOTS`` of one node (after AUTH)."""
        commands: list[tuple[Any, ...]] = []
        if self.password:
            auth = ("AUTH", self.username, self.password) if self.username else None
            commands.append(auth or ("AUTH", self.password))
        commands.append(("CLUSTER", "SLOTS"))
        replies = await _one_round_trip(node, commands, self.tls, self.timeout_s)
        if self.password and isinstance(replies[0], Exception):
            raise RedisConnectionError(f"the node refused the password: {replies[0]}")
        return replies[-1]


def _to_front(addresses: list[Address], address: Address) -> None:
    if addresses[0] != address:
        addresses.remove(address)
        addresses.insert(0, address)


async def _one_round_trip(
    address: Address, commands: list[tuple[Any, ...]], tls: ssl.SSLContext | None, timeout_s: float
) -> list[Any]:
    """``commands`` sent in one write on a connection of their own, and their replies (errors as
    exception objects); the connection is dropped after. Bounded by ``timeout_s`` in all."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(address.host, address.port, ssl=tls)
        try:
            writer.write(b"".join(hiredis.pack_command(cast(Any, c)) for c in commands))
            return await _read_replies(reader, len(commands))
        finally:
            writer.transport.abort()


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
