"""The dashboard's Cancel button in a real headless Chromium, against real `conveyor monitor`
and `conveyor worker` processes: a running job is stopped and shows as failed, cancelled."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Browser, expect
from redis import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync
from tests.e2e.test_dashboard import UI_TIMEOUT_MS, _confirm, _count, _wait_ready

pytestmark = pytest.mark.e2e


def test_cancel_a_running_job_from_its_row(
    spawn: Callable[..., subprocess.Popen[str]], browser: Browser, settings: Settings
) -> None:
    port = free_port()
    monitor = f"http://127.0.0.1:{port}"
    monitor_proc = spawn("monitor", "--port", str(port))
    spawn("worker", "--concurrency", "2")
    _wait_ready(monitor_proc, monitor + "/readyz")
    job_id = _enqueue_running(settings)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{monitor}/#/q/{settings.queue}/active")
    expect(page.get_by_test_id("live")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    button = page.get_by_test_id(f"cancel-{job_id}")
    expect(button).to_be_visible(timeout=UI_TIMEOUT_MS)
    button.click()
    _confirm(page)
    expect(_count(page, "failed")).to_have_text("1", timeout=UI_TIMEOUT_MS)
    expect(_count(page, "active")).to_have_text("0", timeout=UI_TIMEOUT_MS)
    page.goto(f"{monitor}/#/q/{settings.queue}/job/{job_id}")
    expect(page.get_by_test_id("job-state")).to_have_text("failed", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("job-reason")).to_contain_text(
        "JobCancelled: cancelled by monitor user -: from the monitor"
    )
    expect(page.get_by_test_id("job-cancel")).to_have_count(0)  # nothing left to cancel
    assert errors == []
    page.close()


def _enqueue_running(settings: Settings) -> str:
    """Enqueue a 60 s job (from Python beside the processes) and wait until a worker runs it;
    answers its id."""

    async def enqueue() -> str:
        client = QueueClient.from_settings(settings, settings.redis_url)
        try:
            job_id: str = await client.enqueue("simulate", {"duration_ms": 60_000})
            return job_id
        finally:
            await client.close()

    # Playwright's sync API runs an event loop in this thread: the client gets a thread.
    with ThreadPoolExecutor(1) as pool:
        job_id = pool.submit(asyncio.run, enqueue()).result()
    redis = Redis.from_url(settings.redis_url or "", decode_responses=True)
    active = f"{settings.prefix}:{settings.queue}:active"
    wait_for_sync(lambda: job_id in redis.lrange(active, 0, -1), timeout=60)
    redis.close()
    return job_id
