"""API keys, CORS and what a payload may carry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.services.api.auth import ApiKeys, bearer_token
from tests.support.api import api_client

KEYS = "first-key-7f3a, second-key-19bc"


@pytest.mark.parametrize("fast_path", [True, False])
async def test_with_keys_every_endpoint_but_health_needs_one(
    settings: Settings, redis_url: str, fast_path: bool, make_client: Callable[..., QueueClient]
) -> None:
    configured = Settings(redis_url=redis_url, api_keys=KEYS).api_keys
    async with api_client(settings, redis_url, api_keys=configured, api_fast_path=fast_path) as api:
        for method, path in [
            ("POST", "/enqueue"),
            ("POST", "/enqueue/bulk"),
            ("GET", "/jobs/x"),
            ("DELETE", "/jobs/x"),
            ("GET", f"/queues/{settings.queue}"),
            ("GET", "/openapi.json"),
            ("GET", "/docs"),
            ("GET", "/no-such-path"),
        ]:
            response = await api.request(method, path, json={"name": "simulate"})
            assert response.status_code == 401, (method, path)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:conveyor:problem:unauthorized"
            assert response.headers["www-authenticate"] == 'Bearer realm="conveyor"'

        wrong = await api.post(
            "/enqueue", json={"name": "simulate"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        basic = await api.post(
            "/enqueue", json={"name": "simulate"}, headers={"Authorization": "Basic Zm9vOmJhcg=="}
        )
        assert basic.status_code == 401
        assert sum((await make_client().counts()).values()) == 0

        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/readyz")).status_code == 200
        for key in ("first-key-7f3a", "second-key-19bc"):
            ok = await api.post(
                "/enqueue", json={"name": "simulate"}, headers={"Authorization": f"bearer {key}"}
            )
            assert ok.status_code == 201
        doc = await api.get("/openapi.json", headers={"Authorization": "Bearer first-key-7f3a"})
        assert doc.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert doc.json()["paths"]["/enqueue"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in doc.json()["paths"]["/healthz"]["get"]
    assert sum((await make_client().counts()).values()) == 2


def test_keys_are_compared_as_digests_of_the_whole_token() -> None:
    keys = ApiKeys(["alpha", "beta"])
    assert keys.accepts(b"alpha")
    assert keys.accepts(b"beta")
    assert not keys.accepts(b"alph")
    assert not keys.accepts(b"alphaa")
    assert not keys.accepts(b"")
    with pytest.raises(ValueError, match="non-empty"):
        ApiKeys([])


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer   abc  ", b"abc"),
        (b"Bearer", None),
        (b"Basic abc", None),
        (b"", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header: bytes | None, token: bytes | None) -> None:
    assert bearer_token(header) == token


async def test_cors_is_off_by_default(settings: Settings, redis_url: str) -> None:
    async with api_client(settings, redis_url) as api:
        preflight = await api.options(
            "/enqueue",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        simple = await api.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_only_the_configured_origins(settings: Settings, redis_url: str) -> None:
    async with api_client(
        settings, redis_url, api_cors_origins=["https://app.example"], api_keys=[]
    ) as api:
        allowed = await api.options(
            "/enqueue",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = await api.options(
            "/enqueue",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers


async def test_payloads_are_json_data_only(
    settings: Settings, redis_url: str, make_client: Callable[..., QueueClient]
) -> None:
    """A payload is stored as the JSON it was: no pickle, no code, nothing evaluated."""
    sneaky = {"value": "__import__('os').system('true')", "sleep_ms": 0}
    async with api_client(settings, redis_url) as api:
        response = await api.post("/enqueue", json={"name": "echo", "data": sneaky})
        assert response.status_code == 201
        pickle_bytes = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94."
        refused = await api.post(
            "/enqueue",
            content=pickle_bytes,
            headers={"content-type": "application/python-pickle"},
        )
        assert refused.status_code == 415
        nan = await api.post(
            "/enqueue",
            content=b'{"name": "echo", "data": {"value": NaN}}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422
        assert nan.json()["errors"][0]["path"] == "data"
    view = await make_client().get_job(response.json()["id"])
    assert view.info.data == sneaky
    assert view.info.raw_data.startswith("{")
    assert sum((await make_client().counts()).values()) == 1
