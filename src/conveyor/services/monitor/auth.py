"""Who may look and who may act: HTTP Basic accounts with a role, rw or ro.

With no account configured the monitor is open (it binds to 127.0.0.1 by default); with
accounts, every page, API call and the event stream need valid credentials, and the actions
need the rw role. Actions also need the ``X-Conveyor-Action`` header, which a cross-site form
cannot send, so a page elsewhere cannot make a logged-in browser act (CSRF).

FastAPI's ``HTTPBasic`` reads the ``Authorization`` header (and documents the scheme in the
monitor's OpenAPI document); ``Access`` checks what it read in constant time.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.requests import HTTPConnection

from conveyor.config import Settings, split_account
from conveyor.errors import ConfigurationError
from conveyor.services.guard import ACTION_HEADER
from conveyor.services.monitor.problems import ACTION_FORBIDDEN, CREDENTIALS_REQUIRED
from conveyor.services.problems import ProblemError

__all__ = ["ACTION_HEADER", "REALM", "Access", "Actor", "MetricsReader", "Principal", "Viewer"]

REALM = "Conveyor monitor"


@dataclass(frozen=True)
class Principal:
    """Who is asking, and whether they may act."""

    user: str | None
    role: str
    can_act: bool


class Access:
    """Checks credentials against the configured accounts."""

    def __init__(self, settings: Settings) -> None:
        self.read_only = settings.monitor_read_only
        self.metrics_public = settings.monitor_metrics_public
        self.accounts: dict[str, tuple[str, str]] = {}
        for secret in settings.monitor_users:
            user, password, role = split_account(secret.get_secret_value())
            if not (user + password).isascii():
                raise ConfigurationError(
                    f"monitor account {user!r}: use ASCII characters in user names and "
                    "passwords (HTTP Basic credentials are read as ASCII)"
                )
            self.accounts[user] = (password, role)

    @property
    def enabled(self) -> bool:
        return bool(self.accounts)

    def identify(self, credentials: HTTPBasicCredentials | None) -> Principal | None:
        """The principal behind Basic ``credentials``; None when they are refused."""
        if not self.enabled:
            return Principal(user=None, role="rw", can_act=not self.read_only)
        if credentials is None:
            return None
        user, password = credentials.username, credentials.password
        expected, role = self.accounts.get(user, (None, "ro"))
        # Compare even for an unknown user, so timing does not tell which users exist.
        ok = secrets.compare_digest(
            password.encode(), (expected if expected is not None else "\0" + password).encode()
        )
        if not ok or expected is None:
            return None
        return Principal(user=user, role=role, can_act=role == "rw" and not self.read_only)


#: Parses the header; a missing one is None, a malformed one a 401 (the handler's problem).
basic = HTTPBasic(realm=REALM, auto_error=False)


def _viewer(
    connection: HTTPConnection,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> Principal:
    access: Access = connection.app.state.monitor.access
    principal = access.identify(credentials)
    if principal is None:
        raise ProblemError(
            CREDENTIALS_REQUIRED,
            "valid credentials are required",
            headers=basic.make_authenticate_headers(),
        )
    return principal


def _actor(
    connection: HTTPConnection, principal: Annotated[Principal, Depends(_viewer)]
) -> Principal:
    if not principal.can_act:
        access: Access = connection.app.state.monitor.access
        why = "the monitor is read-only" if access.read_only else "this account is read-only"
        raise ProblemError(ACTION_FORBIDDEN, why)
    if not connection.headers.get(ACTION_HEADER):
        raise ProblemError(ACTION_FORBIDDEN, f"actions need the {ACTION_HEADER} header")
    return principal


def _metrics_reader(
    connection: HTTPConnection,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> Principal | None:
    access: Access = connection.app.state.monitor.access
    return None if access.metrics_public else _viewer(connection, credentials)


#: Anyone with valid credentials (everyone when no account is configured).
Viewer = Annotated[Principal, Depends(_viewer)]
#: A principal with the rw role, on a request that carries the action header.
Actor = Annotated[Principal, Depends(_actor)]
#: Whoever may read /metrics: anyone when ``CONVEYOR_MONITOR_METRICS_PUBLIC`` is set.
MetricsReader = Annotated[Principal | None, Depends(_metrics_reader)]
