"""Who may look and who may act: HTTP Basic accounts with a role, rw or ro.

With no account configured the monitor is open (it binds to 127.0.0.1 by default); with
accounts, every page, API call and the event stream need valid credentials, and the actions
need the rw role. Actions also need the ``X-Conveyor-Action`` header, which a cross-site form
cannot send, so a page elsewhere cannot make a logged-in browser act (CSRF).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from conveyor.config import Settings, split_account
from conveyor.services.guard import ACTION_HEADER

__all__ = ["ACTION_HEADER", "REALM", "Access", "Principal"]

REALM = "Conveyor monitor"


@dataclass(frozen=True)
class Principal:
    """Who is asking, and whether they may act."""

    user: str | None
    role: str
    can_act: bool

    def to_json(self) -> dict[str, object]:
        return {"user": self.user, "role": self.role, "can_act": self.can_act}


class Access:
    """Checks credentials against the configured accounts."""

    def __init__(self, settings: Settings) -> None:
        self.read_only = settings.monitor_read_only
        self.accounts: dict[str, tuple[str, str]] = {}
        for secret in settings.monitor_users:
            user, password, role = split_account(secret.get_secret_value())
            self.accounts[user] = (password, role)

    @property
    def enabled(self) -> bool:
        return bool(self.accounts)

    def identify(self, authorization: str | None) -> Principal | None:
        """The principal behind an ``Authorization`` header; None when it is refused."""
        if not self.enabled:
            return Principal(user=None, role="rw", can_act=not self.read_only)
        user, password = _basic(authorization)
        if user is None or password is None:
            return None
        expected, role = self.accounts.get(user, (None, "ro"))
        # Compare even for an unknown user, so timing does not tell which users exist.
        ok = secrets.compare_digest(
            password.encode(), (expected if expected is not None else "\0" + password).encode()
        )
        if not ok or expected is None:
            return None
        return Principal(user=user, role=role, can_act=role == "rw" and not self.read_only)


def _basic(authorization: str | None) -> tuple[str | None, str | None]:
    if not authorization:
        return None, None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password
