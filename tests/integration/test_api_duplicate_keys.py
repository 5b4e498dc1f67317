"""A JSON object that repeats a key means different things to different parsers (most keep
the last one): ``{"name": "nope", "name": "simulate"}`` was enqueued as ``simulate``. Refused
with 422, nothing written, on the fast path, the route and bulk."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.services.api.body import duplicate_key
from tests.support.api import api_client

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(
    ("path", "raw", "key"),
    [
        ("/enqueue", b'{"name": "nope", "name": "simulate"}', "name"),
        ("/enqueue", b'{"name": "echo", "data": {"value": 1, "value": 2}}', "value"),
        ("/enqueue", b'{"name": "echo", "options": {"delay": 1, "delay" : 0}}', "delay"),
        ("/enqueue", b'{"n\\u0061me": "nope", "name": "echo"}', "name"),
        ("/enqueue/bulk", b'{"jobs": [{"name": "echo"}, {"name": "x", "name": "echo"}]}', "name"),
        ("/enqueue/bulk", b'{"jobs": [{"name": "echo"}], "jobs": [{"name": "echo"}]}', "jobs"),
    ],
)
async def test_a_repeated_key_is_422_and_nothing_is_enqueued(
    settings: Settings,
    redis_url: str,
    make_client: Callable[..., QueueClient],
    fast_path: bool,
    path: str,
    raw: bytes,
    key: str,
) -> None:
    async with api_client(settings, redis_url, api_fast_path=fast_path) as api:
        response = await api.post(path, content=raw, headers=JSON)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"] == "urn:conveyor:problem:invalid-request"
    assert f"the key {key!r} appears twice" in body["detail"]
    assert body["errors"][0]["type"] == "json_duplicate_key"
    assert sum((await make_client().counts()).values()) == 0


async def test_the_same_key_in_different_objects_is_fine(
    settings: Settings, redis_url: str, make_client: Callable[..., QueueClient]
) -> None:
    async with api_client(settings, redis_url) as api:
        single = await api.post(
            "/enqueue", json={"name": "echo", "data": {"value": {"name": 1, "value": 2}}}
        )
        assert single.status_code == 201, single.text
        bulk = await api.post("/enqueue/bulk", json={"jobs": [{"name": "echo"}] * 3})
        assert bulk.status_code == 201, bulk.text
    assert sum((await make_client().counts()).values()) == 4


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"a": 1}', None),
        (b'{"a": "x:y", "b": "https://e.example/"}', None),
        (b'{"a": "x\\"y", "a\\"": 1}', None),
        (b'{"a": {"b": 1}, "c": {"b": 2}}', None),
        (b'{"a": "y", ":k": 1, ":k": 2}', ":k"),
        (b'{"a"\n:1, "a":2}', "a"),
        (b'[{"a": 1, "a": 1}]', "a"),
        (b"not json", None),
        # the key texts repeat (a bulk): the parsed entries are counted against the colons,
        # else against the key tokens, and only a real repeat reaches the exact pass
        (b'{"jobs": [{"name": "e", "data": {"n": 1}}, {"name": "e", "data": {"n": 2}}]}', None),
        (b'[{"u": "a:b"}, {"u": "c:d"}]', None),
        (b'[{"u": "https://x", "v": 1}, {"u": "y", "u": "https://z"}]', "u"),
        (b'[{"a": "\\n"}, {"a": 1}]', None),
        (b'{"a\\u0062": 1, "ab": 2}', "ab"),
        (b'[{"a": 123456789012345678901234567890}, {"a": 1}]', None),
        (b'{"a": 123456789012345678901234567890, "a": 1}', "a"),
    ],
)
def test_duplicate_key_detection(raw: bytes, key: str | None) -> None:
    assert duplicate_key(raw) == key
