"""Which ``POST /enqueue`` requests the front door answers before the middleware stack: only
those every layer of it would pass on untouched (the answers themselves are the fast path's,
tested through the API in tests/integration)."""

from __future__ import annotations

import pytest

from conveyor.services.api.auth import PUBLIC_PATHS, ApiKeys
from conveyor.services.api.fastpath import FrontDoor
from conveyor.services.guard import RequestGuard

JSON = (b"content-type", b"application/json")
HOST = (b"host", b"127.0.0.1:8000")


def scope(*headers: tuple[bytes, bytes], path: str = "/enqueue", method: str = "POST") -> dict:
    return {
        "type": "http",
        "path": path,
        "method": method,
        "root_path": "",
        "headers": [HOST, *headers],
    }


def door(*, keys: list[str] | None = None, cors: bool = False) -> FrontDoor:
    guard = RequestGuard(
        bound_host="127.0.0.1",
        trusted_origins=["https://app.example"] if cors else [],
        public_paths=PUBLIC_PATHS,
        json_paths=["/enqueue"],
        accept_bearer=True,
    )
    return FrontDoor(guard, ApiKeys(keys) if keys else None, cors=cors)


@pytest.mark.parametrize(
    ("front", "request_scope", "taken"),
    [
        (door(), scope(JSON), True),
        (door(), scope(JSON, path="/enqueue/bulk"), False),
        (door(), scope(JSON, method="GET"), False),
        (door(), {**scope(JSON), "root_path": "/api"}, False),
        (door(), {**scope(JSON), "type": "websocket"}, False),
        # the guard would refuse: its refusal is rendered by the stack
        (door(), scope(JSON, (b"host", b"evil.example")), False),
        (door(), scope(JSON, (b"sec-fetch-site", b"cross-site")), False),
        (door(), scope(JSON, (b"origin", b"https://evil.example")), False),
        # API keys: only a valid one skips the stack (which answers 401 to the rest)
        (door(keys=["k-1"]), scope(JSON), False),
        (door(keys=["k-1"]), scope(JSON, (b"authorization", b"Bearer k-2")), False),
        (door(keys=["k-1"]), scope(JSON, (b"authorization", b"Bearer k-1")), True),
        # the first Authorization header decides, as in ApiKeyMiddleware
        (
            door(keys=["k-1"]),
            scope(JSON, (b"authorization", b"Bearer k-2"), (b"authorization", b"Bearer k-1")),
            False,
        ),
        # CORS on: a request with an Origin gets CORS headers from the stack
        (door(cors=True), scope(JSON), True),
        (door(cors=True), scope(JSON, (b"origin", b"https://app.example")), False),
    ],
)
def test_the_front_door_takes_only_what_the_stack_would_pass_on(
    front: FrontDoor, request_scope: dict, taken: bool
) -> None:
    assert front.takes(request_scope) is taken
