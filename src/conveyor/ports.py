"""TCP ports on this machine: a free one to use, and whether a given one can be listened on.

Servers bind with SO_REUSEADDR, so the probe does too: a port whose last connection lingers in
TIME_WAIT counts as free, one that something listens on does not.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host:port`` now (in use, not an address here), or
    None when it could. An IPv6 host is an address with a colon."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None
