"""Optional API keys: ``Authorization: Bearer <key>`` on everything but the health checks.

Keys are compared as SHA-256 digests with ``hmac.compare_digest``, against every configured
key without stopping at the first match, so the time taken says nothing about how close a
guess was or which key matched.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.services.api.problems import UNAUTHORIZED, ProblemError, render

#: Paths anyone may call: load balancers and orchestrators probe them without keys.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


def _digest(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return hashlib.sha256(raw).digest()


class ApiKeys:
    """A set of accepted keys, kept only as digests."""

    def __init__(self, keys: list[str]) -> None:
        if not keys or any(not k for k in keys):
            raise ValueError("API keys must be non-empty")
        self._digests = [_digest(k) for k in keys]

    def accepts(self, presented: bytes) -> bool:
        candidate = _digest(presented)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def bearer_token(header: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header value (scheme case-blind)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return token or None


class ApiKeyMiddleware:
    """Answers 401 (problem+json, WWW-Authenticate) to requests without a valid key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, retry_after_s: int) -> None:
        self.app = app
        self.keys = keys
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        token = bearer_token(header)
        if token is not None and self.keys.accepts(token):
            await self.app(scope, receive, send)
            return
        challenge = 'Bearer realm="conveyor"'
        if token is not None:
            challenge += ', error="invalid_token"'
            detail = "the API key is not valid"
        else:
            detail = "send an API key as 'Authorization: Bearer <key>'"
        problem = ProblemError(UNAUTHORIZED, detail, headers={"WWW-Authenticate": challenge})
        response = render(problem, scope["path"], self.retry_after_s)
        await response(scope, receive, send)
