"""A real headless Chromium on a page of another site tries to pause the queue through a real
``conveyor api`` process: with an HTML form and with a ``no-cors`` fetch. Both reach the API
and are refused (403 ``cross-site-request``); the queue stays running. The API's own page
(``/docs``) can still pause it."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Browser
from redis import Redis

from conveyor.config import Settings
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync
from tests.e2e.conftest import output_of

pytestmark = pytest.mark.e2e

PAGE = """<!doctype html>
<form id="f" method="post" action="{api}/queues/{queue}/pause">
  <input type="hidden" name="confirm" value="yes">
</form>
<script>
  fetch("{api}/queues/{queue}/pause", {{method: "POST", mode: "no-cors", body: "x"}})
    .then(() => {{ document.title = "fetched"; }}, () => {{ document.title = "fetch failed"; }});
</script>
"""


@pytest.fixture
def evil_site() -> Iterator[Callable[[str], str]]:
    """A page server on http://localhost:<port> (another site than 127.0.0.1)."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def publish(html: str) -> str:
        pages["/"] = html.encode()
        return f"http://localhost:{server.server_address[1]}/"

    try:
        yield publish
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_site_form_and_no_cors_fetch_cannot_pause_the_queue(
    spawn: Callable[..., subprocess.Popen[str]],
    browser: Browser,
    settings: Settings,
    evil_site: Callable[[str], str],
) -> None:
    port = free_port()
    api = spawn("api", "--port", str(port))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert api.poll() is None, output_of(api)
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for_sync(ready, timeout=60)
    page = browser.new_page()
    try:
        page.goto(evil_site(PAGE.format(api=base, queue=settings.queue)))
        wait_for_sync(lambda: page.title() in ("fetched", "fetch failed"), timeout=30)
        assert page.title() == "fetched"  # the no-cors POST went out (its answer is opaque)
        with page.expect_navigation():
            page.evaluate("document.getElementById('f').submit()")
        answer = page.inner_text("body")
    finally:
        page.close()
    assert "urn:conveyor:problem:cross-site-request" in answer  # the form reached the API
    with Redis.from_url(settings.redis_url or "", decode_responses=True) as redis:
        meta = redis.hgetall(f"{settings.prefix}:{settings.queue}:meta")
    assert "paused" not in meta
    status = httpx.get(f"{base}/queues/{settings.queue}").json()
    assert status["paused"] is False

    # The API's own page (/docs, "Try it out") is same-origin: the browser says so, and its
    # body-less POST goes through without any extra header.
    own = browser.new_page()
    try:
        own.goto(f"{base}/docs")
        code = own.evaluate(
            f"fetch('/queues/{settings.queue}/pause', {{method: 'POST'}}).then(r => r.status)"
        )
    finally:
        own.close()
    assert code == 200
    assert httpx.get(f"{base}/queues/{settings.queue}").json()["paused"] is True
