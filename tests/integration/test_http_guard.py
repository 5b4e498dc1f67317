"""Cross-site requests and DNS rebinding, over real HTTP with the headers browsers send.

The API and the monitor run under a real uvicorn server (the production protocol and
settings) on a free port; requests carry what Chromium sends for a cross-site form, a
``no-cors`` fetch, a same-origin script and a DNS-rebinding page. A refused request changes
nothing in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.services.api import create_app
from conveyor.services.guard import RequestGuard, host_name
from conveyor.services.serving import ConnectionLimits, ServingConfig
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.support.api import registry
from tests.support.monitor import serve_monitor

FORM = "application/x-www-form-urlencoded"
ACT = {"X-Conveyor-Action": "1"}


def cross_site(origin: str = "https://evil.example", **extra: str) -> dict[str, str]:
    """What Chromium sends with a form or ``no-cors`` fetch from a page on another site."""
    return {"Origin": origin, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", **extra}


@contextlib.asynccontextmanager
async def serve_api(settings: Settings, redis_url: str, **overrides: Any) -> AsyncIterator[str]:
    """The API app under uvicorn with Conveyor's protocol, on a free port: its base URL."""
    merged = settings.model_copy(update=overrides)
    app = create_app(merged, redis_url, registry=registry)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = ServingConfig(
        app,
        limits=ConnectionLimits.from_settings(merged),
        log_config=None,
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), 10, message="api start")
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def _failed_job(client: QueueClient, make_worker: Callable[..., Worker]) -> str:
    job_id = await client.enqueue("explode", {"value": "x"})
    make_worker(registry)
    await wait_for(lambda: _state_is(client, job_id, JobState.FAILED), 15)
    return job_id


async def _state_is(client: QueueClient, job_id: str, state: JobState) -> bool:
    return await client.get_state(job_id) is state


async def test_a_cross_site_form_or_no_cors_fetch_changes_nothing(
    settings: Settings,
    redis_url: str,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    queue = make_client(registry)
    failed = await _failed_job(queue, make_worker)
    waiting = await queue.enqueue("echo", {"value": 1}, {"delay": 600_000})
    async with serve_api(settings, redis_url) as base, httpx.AsyncClient(base_url=base) as http:
        attempts = [
            # <form method=post action=.../pause> on another site
            ("POST", f"/queues/{settings.queue}/pause", cross_site(**{"Content-Type": FORM})),
            # fetch(url, {method: "POST", mode: "no-cors"}), with and without a text body
            ("POST", f"/queues/{settings.queue}/pause", cross_site()),
            ("POST", f"/jobs/{failed}/retry", cross_site(**{"Content-Type": "text/plain"})),
            ("POST", f"/jobs/{failed}/retry", {}),
            ("DELETE", f"/jobs/{waiting}", cross_site()),
            # a form POST from an old browser that sends neither Origin nor Sec-Fetch-Site
            ("POST", f"/queues/{settings.queue}/pause", {"Content-Type": FORM}),
            ("DELETE", f"/jobs/{waiting}", {}),
            # same host, another port: "same-site" for the browser, still another origin
            (
                "POST",
                f"/queues/{settings.queue}/pause",
                {
                    **cross_site(),
                    **ACT,
                    "Sec-Fetch-Site": "same-site",
                    "Origin": "http://127.0.0.1:1",
                },
            ),
            # an enqueue by a cross-site form (it would have been 415 anyway)
            ("POST", "/enqueue", cross_site(**{"Content-Type": FORM})),
            (
                "POST",
                "/enqueue",
                {
                    **cross_site(),
                    "Content-Type": "application/json",
                    "Sec-Fetch-Site": "none",
                    "Origin": "null",
                },
            ),
        ]
        for method, path, headers in attempts:
            content = b'{"name": "echo"}' if path == "/enqueue" else b"a=b"
            response = await http.request(method, path, headers=headers, content=content)
            assert response.status_code == 403, (method, path, headers, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:conveyor:problem:cross-site-request"
    assert not await queue.is_paused()
    assert await queue.get_state(waiting) is JobState.DELAYED
    assert await queue.get_state(failed) is JobState.FAILED
    assert sum((await queue.counts()).values()) == 2


async def test_scripts_and_same_origin_pages_still_act(
    settings: Settings,
    redis_url: str,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    queue = make_client(registry)
    failed = await _failed_job(queue, make_worker)
    async with serve_api(settings, redis_url) as base, httpx.AsyncClient(base_url=base) as http:
        # The README's curl example: a JSON body.
        added = await http.post("/enqueue", json={"name": "echo", "data": {"value": 1}})
        assert added.status_code == 201
        # A script's body-less POST: the header, or a JSON content type, marks it.
        paused = await http.post(f"/queues/{settings.queue}/pause", headers=ACT)
        assert paused.status_code == 200
        assert paused.json()["paused"] is True
        resumed = await http.post(
            f"/queues/{settings.queue}/resume", headers={"Content-Type": "application/json"}
        )
        assert resumed.json()["paused"] is False
        # A page served by this very host (same origin) with the header.
        same_origin = {"Origin": base, "Sec-Fetch-Site": "same-origin", **ACT}
        retried = await http.post(f"/jobs/{failed}/retry", headers=same_origin)
        assert retried.status_code == 200, retried.text
        assert (await http.delete(f"/jobs/{added.json()['id']}", headers=ACT)).status_code == 204
        # The API's own /docs page ("Try it out"): the browser vouches for the same origin.
        swagger = {"Origin": base, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        tried = await http.post(f"/queues/{settings.queue}/resume", headers=swagger)
        assert tried.status_code == 200, tried.text
        # Without the browser's word (no Sec-Fetch-Site), the header is still needed.
        bare = await http.post(f"/queues/{settings.queue}/resume", headers={"Origin": base})
        assert bare.status_code == 403
        # Reading is never refused for want of the header.
        assert (await http.get(f"/queues/{settings.queue}")).status_code == 200


async def test_with_api_keys_a_bearer_key_marks_a_script(
    settings: Settings, redis_url: str
) -> None:
    keys = Settings(api_keys="k-1").api_keys
    async with (
        serve_api(settings, redis_url, api_keys=keys) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        pause = f"/queues/{settings.queue}/pause"
        ok = await http.post(pause, headers={"Authorization": "Bearer k-1"})
        assert ok.status_code == 200
        forged = await http.post(pause, headers=cross_site(Authorization="Bearer k-1"))
        assert forged.status_code == 403


async def test_a_trusted_cors_origin_may_act_from_its_own_site(
    settings: Settings, redis_url: str
) -> None:
    async with (
        serve_api(settings, redis_url, api_cors_origins=["https://app.example"]) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        headers = cross_site("https://app.example", **{"Content-Type": "application/json"})
        added = await http.post("/enqueue", headers=headers, content=b'{"name": "echo"}')
        assert added.status_code == 201
        assert added.headers["access-control-allow-origin"] == "https://app.example"
        # Trusted or not, a body-less POST still needs the header (a form cannot send it).
        form = await http.post(
            f"/queues/{settings.queue}/pause", headers=cross_site("https://app.example")
        )
        assert form.status_code == 403
        other = await http.post(
            "/enqueue", headers=cross_site(**{"Content-Type": "application/json"}), content=b"{}"
        )
        assert other.status_code == 403


async def test_dns_rebinding_is_refused_by_the_host_check(
    settings: Settings, redis_url: str, make_client: Callable[..., QueueClient]
) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 is same-origin for the
    browser: it can send any header, but its Host is its own name."""
    queue = make_client(registry)
    job_id = await queue.enqueue("echo", {"value": "secret"})
    async with serve_api(settings, redis_url) as base, httpx.AsyncClient(base_url=base) as http:
        port = base.rpartition(":")[2]
        rebound = {
            "Host": f"evil.example:{port}",
            "Origin": f"http://evil.example:{port}",
            "Sec-Fetch-Site": "same-origin",
            **ACT,
        }
        for method, path in [
            ("GET", f"/jobs/{job_id}"),
            ("POST", f"/queues/{settings.queue}/pause"),
            ("POST", "/enqueue"),
            ("GET", "/openapi.json"),
        ]:
            response = await http.request(
                method,
                path,
                headers={**rebound, "Content-Type": "application/json"},
                content=b'{"name": "echo"}' if method == "POST" else None,
            )
            assert response.status_code == 421, (method, path)
            assert response.json()["type"] == "urn:conveyor:problem:host-not-allowed"
            assert "CONVEYOR_HTTP_ALLOWED_HOSTS" in response.json()["detail"]
        # Probes may use any name.
        assert (await http.get("/healthz", headers=rebound)).status_code == 200
        # Loopback names, IP addresses and *.localhost are always served.
        for host in ("localhost", "127.0.0.1", "[::1]", "10.1.2.3", "api.localhost"):
            reply = await http.get(f"/jobs/{job_id}", headers={"Host": f"{host}:{port}"})
            assert reply.status_code == 200, host
    assert not await queue.is_paused()
    assert sum((await queue.counts()).values()) == 1


async def test_configured_host_names_are_served(settings: Settings, redis_url: str) -> None:
    """Containers call each other by service name: CONVEYOR_HTTP_ALLOWED_HOSTS=api,..."""
    allowed = Settings(http_allowed_hosts="api, Queue.Example.com").http_allowed_hosts
    async with (
        serve_api(settings, redis_url, http_allowed_hosts=allowed) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        for host in ("api:8000", "api", "queue.example.com", "QUEUE.EXAMPLE.COM:443"):
            assert (await http.get("/tasks", headers={"Host": host})).status_code == 200, host
        assert (await http.get("/tasks", headers={"Host": "monitor:8001"})).status_code == 421
        origin = {"Host": "api:8000", "Origin": "http://api:8000", **ACT}
        paused = await http.post(f"/queues/{settings.queue}/pause", headers=origin)
        assert paused.status_code == 200
        # Behind a proxy that rewrites Host (nginx's default), a page at a configured name
        # still counts as this service's own; another name does not.
        proxied = {"Host": "127.0.0.1:8000", "Sec-Fetch-Site": "same-origin", **ACT}
        public = {**proxied, "Origin": "https://queue.example.com"}
        resumed = await http.post(f"/queues/{settings.queue}/resume", headers=public)
        assert resumed.status_code == 200, resumed.text
        other = {**proxied, "Origin": "https://other.example.com"}
        assert (
            await http.post(f"/queues/{settings.queue}/pause", headers=other)
        ).status_code == 403
    async with (
        serve_api(settings, redis_url, http_allowed_hosts=["*"]) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        assert (await http.get("/tasks", headers={"Host": "anything.example"})).status_code == 200


async def test_the_monitor_refuses_rebinding_and_cross_site_actions(
    settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    queue = make_client()
    async with serve_monitor(settings) as monitor:
        port = str(monitor.base_url).rstrip("/").rpartition(":")[2]
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}", **ACT}
        assert (await monitor.get("/api/overview", headers=rebound)).status_code == 421
        pause = f"/api/queues/{settings.queue}/pause"
        assert (await monitor.post(pause, headers=rebound)).status_code == 421
        forged = await monitor.post(pause, headers={**cross_site(), **ACT})
        assert forged.status_code == 403
        assert forged.headers["content-type"] == "application/problem+json"
        form = await monitor.post(pause, headers={"Content-Type": FORM}, content=b"a=b")
        assert form.status_code == 403
        assert not await queue.is_paused()
        assert (await monitor.get("/healthz", headers=rebound)).status_code == 200
        dashboard = {
            "Origin": str(monitor.base_url).rstrip("/"),
            "Sec-Fetch-Site": "same-origin",
            **ACT,
        }
        assert (await monitor.post(pause, headers=dashboard)).status_code == 200
    assert await queue.is_paused()


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("localhost:8000", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("Example.COM.", "example.com"),
        ("api", "api"),
    ],
)
def test_host_names_drop_the_port_and_the_case(host: str, name: str) -> None:
    assert host_name(host) == name


def test_the_bound_host_is_served_and_any_ip_address() -> None:
    guard = RequestGuard(bound_host="box.internal")
    assert guard.host_allowed(b"box.internal:8000")
    assert guard.host_allowed(b"192.168.1.5:8000")
    assert guard.host_allowed(b"[fe80::1]:8000")
    assert not guard.host_allowed(b"box.internal.evil.example")
    assert not guard.host_allowed(b"localhost.evil.example")
