"""Who may send a request from a browser: a Host allow-list and a cross-site request check.

With no API keys and no monitor accounts (the defaults), a page on any site could otherwise
make a visitor's browser pause the queue or retry jobs (CSRF): a form or a ``no-cors`` fetch
sends a body-less POST without any check. And a DNS-rebinding page (its own name resolving to
127.0.0.1) is same-origin for the browser, so only the ``Host`` header gives it away.

``RequestGuard.check`` decides from the headers alone (no body, no Redis), cheaply enough for
the API's fast path:

- **Host**: every request (but the health checks) must name an allowed host: ``localhost``,
  ``*.localhost``, any IP address (a rebinding page always uses a DNS name), the bound host,
  and ``CONVEYOR_HTTP_ALLOWED_HOSTS`` (``*``: any). Otherwise 421.
- **State-changing requests** (POST, PUT, PATCH, DELETE) are refused (403) when the browser
  says they come from another site (``Sec-Fetch-Site: cross-site`` or ``same-site``), or their
  ``Origin`` is neither the ``Host`` asked for nor a name in ``CONVEYOR_HTTP_ALLOWED_HOSTS``
  (a reverse proxy may rewrite ``Host``), unless the origin is a trusted one (the API's CORS
  origins). And they must carry a header no cross-site form or ``no-cors`` fetch can send:
  ``Content-Type: application/json`` (or ``*/*+json``), ``X-Conveyor-Action``, or, where the
  service takes them, ``Authorization: Bearer``, unless the browser itself says it comes
  from a page of the same origin (``Sec-Fetch-Site: same-origin`` with a matching
  ``Origin``: the API's own ``/docs``). Paths that read a JSON body check its type
  themselves (415) and are listed in ``json_paths``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

#: The header that marks a request as made by a script, not a form (any non-empty value).
ACTION_HEADER = "X-Conveyor-Action"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Most distinct Host values remembered as allowed (the check is cheap anyway).
HOST_CACHE_SIZE = 1024


class Refusal(StrEnum):
    """Why a request is refused: its problem type's slug."""

    HOST = "host-not-allowed"
    CROSS_SITE = "cross-site-request"


@dataclass(frozen=True)
class Verdict:
    refusal: Refusal
    detail: str

    @property
    def status(self) -> int:
        return 421 if self.refusal is Refusal.HOST else 403


def host_name(host: str) -> str:
    """``Host`` without its port, lower case (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    return host.partition(":")[0].rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _origin_netloc(origin: str) -> str | None:
    """``http://host:port`` -> ``host:port``; None for ``null`` or anything else."""
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        return None
    return rest.lower()


def _default_port(netloc: str, scheme: str) -> str:
    has_port = netloc.rpartition("]")[2] if netloc.startswith("[") else netloc
    if ":" in has_port:
        return netloc
    return f"{netloc}:{443 if scheme == 'https' else 80}"


class RequestGuard:
    """The Host allow-list and the cross-site check of one service."""

    def __init__(
        self,
        *,
        allowed_hosts: Iterable[str] = (),
        bound_host: str = "",
        trusted_origins: Iterable[str] = (),
        public_paths: Iterable[str] = (),
        json_paths: Iterable[str] = (),
        accept_bearer: bool = False,
    ) -> None:
        names = {host_name(h) for h in allowed_hosts if h.strip()}
        self.any_host = "*" in names
        #: Names the operator gave: a page at one of them is this service behind a proxy that
        #: may rewrite Host (nginx's default), so its Origin counts as this service's own.
        self.configured = frozenset(names - {"*"})
        bound = host_name(bound_host)
        if bound and not _is_ip(bound):
            names.add(bound)
        self.names = frozenset(names | {"localhost"})
        origins = {o.strip().lower().rstrip("/") for o in trusted_origins if o.strip()}
        self.any_origin = "*" in origins
        self.trusted_origins = frozenset(origins)
        self.public_paths = frozenset(public_paths)
        self.json_paths = frozenset(json_paths)
        self.accept_bearer = accept_bearer
        self._allowed: set[bytes] = set()

    def host_allowed(self, host: bytes) -> bool:
        if self.any_host or host in self._allowed:
            return True
        name = host_name(host.decode("latin-1"))
        ok = name in self.names or name.endswith(".localhost") or _is_ip(name)
        if ok and len(self._allowed) < HOST_CACHE_SIZE:
            self._allowed.add(host)
        return ok

    def _trusted(self, origin: str | None) -> bool:
        if origin is None or origin == "null":
            return False
        return self.any_origin or origin.lower().rstrip("/") in self.trusted_origins

    def check(
        self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> Verdict | None:
        """None when the request may proceed; else why not."""
        host = origin = site = None
        scripted = False
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                site = value.lower()
            elif name == b"content-type":
                scripted = scripted or _is_json(value)
            elif name == b"x-conveyor-action":
                scripted = scripted or bool(value.strip())
            elif name == b"authorization" and self.accept_bearer:
                scripted = scripted or value[:7].lower() == b"bearer "
        if host is not None and path not in self.public_paths and not self.host_allowed(host):
            shown = host.decode("latin-1")[:100]
            return Verdict(
                Refusal.HOST,
                f"this server does not answer to the host {shown!r}; add it to "
                "CONVEYOR_HTTP_ALLOWED_HOSTS",
            )
        if method not in UNSAFE_METHODS:
            return None
        trusted = self._trusted(origin)
        if site in (b"cross-site", b"same-site") and not trusted:
            return Verdict(Refusal.CROSS_SITE, f"a {site.decode()} request may not change anything")
        own = origin is not None and self._own_origin(origin, host)
        if origin is not None and not trusted and not own:
            return Verdict(
                Refusal.CROSS_SITE,
                f"a request from the origin {origin[:100]!r} may not change anything",
            )
        if site == b"same-origin" and own:
            return None  # the browser vouches: a page of this very host (the API's /docs)
        if not scripted and path not in self.json_paths:
            return Verdict(
                Refusal.CROSS_SITE,
                f"send Content-Type: application/json or the {ACTION_HEADER} header "
                "with requests that change something",
            )
        return None

    def _own_origin(self, origin: str, host: bytes | None) -> bool:
        """``Origin`` is this service: the host asked for, or a configured name."""
        netloc = _origin_netloc(origin)
        if netloc is None:
            return False
        if host_name(netloc) in self.configured:
            return True
        if host is None:
            return False
        scheme = origin.partition("://")[0]
        asked = host.decode("latin-1").strip().lower()
        return _default_port(netloc, scheme) == _default_port(asked, scheme)


class GuardMiddleware:
    """Answers refused requests (through ``render``); passes the others on untouched."""

    def __init__(
        self, app: ASGIApp, guard: RequestGuard, render: Callable[[Verdict, Scope], Response]
    ) -> None:
        self.app = app
        self.guard = guard
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            verdict = self.guard.check(scope["method"], scope["path"], scope["headers"])
            if verdict is not None:
                await self.render(verdict, scope)(scope, receive, send)
                return
        await self.app(scope, receive, send)
