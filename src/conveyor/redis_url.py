"""What ``CONVEYOR_REDIS_URL`` says, parsed once: how to find the server and how to talk to it.

The forms:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS), ``unix:///path``: one
  server at a fixed address (``FixedAddress``);
- ``redis+sentinel://[[user]:password@]host1:port1[,host2:port2...]/MASTER_NAME[/DB]`` and
  ``rediss+sentinel://`` (TLS to the sentinels and the master): the sentinels are asked where
  the master named MASTER_NAME is, on every (re)connect (``SentinelResolver``). The user and
  password are the master's; the sentinels' own password is a setting of its own
  (``CONVEYOR_REDIS_SENTINEL_PASSWORD``).
- ``redis+cluster://[[user]:password@]host1:port1[,host2:port2...]`` and ``rediss+cluster://``:
  a Redis Cluster, found from any of the nodes listed (``ClusterSlotResolver``). Each queue's
  connections go to the master that owns its hash slot (``conveyor.hashtag``).

TLS options ride in the query string, as redis-py reads them from ``rediss://``:
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``.

Pure: no I/O. ``conveyor.config`` checks a URL with ``redis_url_problem`` when the settings are
built; ``conveyor.redis`` turns a ``RedisTarget`` into connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from conveyor.errors import ConfigurationError

#: The schemes whose server is asked of Redis Sentinel.
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
#: The schemes of a Redis Cluster.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
#: The TLS options a URL's query may carry (the names redis-py reads from rediss:// URLs).
TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)


@dataclass(frozen=True)
class HostPort:
    """One ``host:port`` of a URL."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL. ``sentinels`` and ``master_name`` are set for the sentinel schemes
    only; ``server`` for redis:// and rediss:// only; ``unix_path`` for unix:// only."""

    scheme: str
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    server: HostPort | None = None
    unix_path: str | None = None
    sentinels: tuple[HostPort, ...] = ()
    master_name: str | None = None
    #: The nodes a ``redis+cluster://`` URL lists (any of them tells where the others are).
    cluster_nodes: tuple[HostPort, ...] = ()
    #: TLS options from the query string (``TLS_OPTIONS``), as strings.
    tls_options: dict[str, str] = field(default_factory=dict)

    @property
    def uses_sentinel(self) -> bool:
        return self.scheme in SENTINEL_SCHEMES

    @property
    def uses_cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES


def is_cluster_url(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return bool(url) and str(url).partition("://")[0] in CLUSTER_SCHEMES


def _port(text: str, default: int) -> int:
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f"the port {text!r} is not a number from 1 to 65535")
    return int(text)


def _host_port(text: str, default_port: int) -> HostPort:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not host:port")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"{text!r} names no host (host:port)")
    return HostPort(host, _port(port, default_port))


def _db(text: str, example: str) -> int:
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"the database {text!r} is not a number ({example})")
    return int(text)


def _tls_options(query: str) -> dict[str, str]:
    return {name: value for name, value in parse_qsl(query) if name in TLS_OPTIONS}


def parse_redis_url(url: str) -> RedisTarget:
    """The target ``url`` names; ConfigurationError (never quoting a password) otherwise."""
    try:
        return _parse(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL: {exc}") from exc


def _parse(url: str) -> RedisTarget:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel://, "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the socket's path (unix:///path)")
        db = dict(parse_qsl(parts.query)).get("db", "")
        return RedisTarget(
            scheme=scheme,
            tls=False,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            unix_path=parts.path,
            db=_db(db, "unix:///path?db=0"),
        )
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":") if at else ("", "", "")
    common = {
        "scheme": scheme,
        "tls": scheme.startswith("rediss"),
        "username": unquote(user) or None,
        "password": unquote(password) or None,
        "tls_options": _tls_options(parts.query),
    }
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_target(hostlist, parts.path, common)
    if scheme in CLUSTER_SCHEMES:
        return _cluster_target(hostlist, parts.path, common)
    if not hostlist:
        raise ValueError("names no host (redis://host:port/db)")
    return RedisTarget(
        server=_host_port(hostlist, DEFAULT_PORT),
        db=_db(parts.path.strip("/"), "redis://host:port/0"),
        **common,  # type: ignore[arg-type]
    )


def _sentinel_target(hostlist: str, path: str, common: dict[str, object]) -> RedisTarget:
    example = f"{common['scheme']}://host1:26379,host2:26379/MASTER_NAME/0"
    if not hostlist:
        raise ValueError(f"names no sentinel ({example})")
    sentinels = tuple(
        _host_port(item.strip(), DEFAULT_SENTINEL_PORT) for item in hostlist.split(",")
    )
    name, _, db = path.strip("/").partition("/")
    name = unquote(name)
    if not name:
        raise ValueError(
            f"names no master: the sentinels' name for it comes after the hosts ({example})"
        )
    if "/" in db:
        raise ValueError(f"has more after the database: {db!r} ({example})")
    return RedisTarget(
        sentinels=sentinels,
        master_name=name,
        db=_db(db, example),
        **common,  # type: ignore[arg-type]
    )


def _cluster_target(hostlist: str, path: str, common: dict[str, object]) -> RedisTarget:
    example = f"{common['scheme']}://host1:7000,host2:7001"
    if not hostlist:
        raise ValueError(f"names no cluster node ({example})")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, not {path.strip('/')!r}")
    nodes = tuple(_host_port(item.strip(), DEFAULT_PORT) for item in hostlist.split(","))
    return RedisTarget(cluster_nodes=nodes, **common)  # type: ignore[arg-type]


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL (never quoting its password), or None when it is usable.

    Checked when the settings are built, so a bad port or database number ends every command
    with one readable line instead of failing deep inside the Redis client.
    """
    try:
        _parse(url)
    except ValueError as exc:
        return str(exc)
    return None
