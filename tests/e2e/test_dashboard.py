"""The dashboard in a real headless browser (Debian's chromium driven by Playwright), against
real `conveyor monitor`, `conveyor worker` and `conveyor api` processes: jobs enqueued through
the HTTP API show up live, without a reload, and a failed job is retried with its button.

Set CONVEYOR_SCREENSHOT to also write the screenshot there (the README's is made so:
``CONVEYOR_SCREENSHOT=docs/img/dashboard.png pytest tests/e2e/test_dashboard.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from conveyor.config import Settings
from conveyor.ports import free_port
from conveyor.testing import wait_for_sync
from tests.e2e.conftest import output_of, run_cli

pytestmark = pytest.mark.e2e

#: Generous bounds for a loaded 2-core machine (ms, Playwright's unit).
UI_TIMEOUT_MS = 30_000


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_ready(proc: subprocess.Popen[str], url: str) -> None:
    wait_for_sync(
        lambda: _ready(url) or proc.poll() is not None, timeout=60, message=f"{url} not ready"
    )
    assert proc.poll() is None, output_of(proc)


def _count(page: Page, state: str) -> Any:
    return page.get_by_test_id(f"count-{state}").locator(".card-value")


def _confirm(page: Page) -> None:
    dialog = page.get_by_test_id("confirm")
    expect(dialog).to_be_visible()
    page.get_by_test_id("confirm-ok").click()
    expect(dialog).to_be_hidden()


def test_dashboard_shows_live_counts_and_retries_a_failed_job(
    spawn: Callable[..., subprocess.Popen[str]],
    browser: Browser,
    settings: Settings,
    tmp_path: Path,
) -> None:
    monitor_port, api_port = free_port(), free_port()
    monitor = f"http://127.0.0.1:{monitor_port}"
    api = f"http://127.0.0.1:{api_port}"
    # the three start together (each takes seconds to import on a busy machine)
    monitor_proc = spawn("monitor", "--port", str(monitor_port))
    api_proc = spawn("api", "--port", str(api_port))
    spawn("worker", "--concurrency", "8")
    _wait_ready(monitor_proc, monitor + "/readyz")
    _wait_ready(api_proc, api + "/readyz")
    wait_for_sync(
        lambda: httpx.get(monitor + "/api/workers").json()["workers"],
        timeout=60,
        message="worker did not connect",
    )

    page = browser.new_page(viewport={"width": 1400, "height": 1050})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{monitor}/#/q/{settings.queue}/failed")
    expect(page.get_by_test_id("live")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    expect(_count(page, "completed")).to_have_text("0")
    page.evaluate("window.__sameDocument = 'yes'")

    # enqueue through the HTTP API; the counts change on the open page
    def enqueue(data: dict[str, Any], options: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"name": "simulate", "data": data}
        if options:
            body["options"] = options
        reply = httpx.post(api + "/enqueue", json=body, timeout=10)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    for _ in range(24):
        enqueue({"duration_ms": 400, "fail_rate": 0})
    for _ in range(3):
        enqueue({"duration_ms": 200, "fail_rate": 1}, {"attempts": 2, "backoff": 100})
    expect(_count(page, "completed")).to_have_text("24", timeout=UI_TIMEOUT_MS)
    expect(_count(page, "failed")).to_have_text("3", timeout=UI_TIMEOUT_MS)
    rows = page.locator("#jobs tbody tr[data-job-id]")
    expect(rows).to_have_count(3, timeout=UI_TIMEOUT_MS)
    group = page.get_by_test_id("error-group")
    expect(group).to_have_count(1)
    expect(group).to_contain_text("SimulatedFailure: simulated failure (fail_rate=<n>)")
    expect(group.locator(".error-count")).to_have_text("3")

    page.select_option("#window", "5")
    page.wait_for_function("document.getElementById('legend-throughput').children.length === 3")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("CONVEYOR_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["CONVEYOR_SCREENSHOT"])

    # pause, so the retried job stays visible (in the paused list: BullMQ 5's layout, see
    # docs/interop.md)
    page.get_by_test_id("pause").click()
    _confirm(page)
    expect(page.locator("#paused-badge")).to_be_visible(timeout=UI_TIMEOUT_MS)

    job_id = rows.first.get_attribute("data-job-id")
    assert job_id
    page.get_by_test_id(f"retry-{job_id}").click()
    _confirm(page)
    expect(_count(page, "failed")).to_have_text("2", timeout=UI_TIMEOUT_MS)
    expect(_count(page, "paused")).to_have_text("1", timeout=UI_TIMEOUT_MS)
    expect(_count(page, "waiting")).to_have_text("0")
    expect(rows).to_have_count(2, timeout=UI_TIMEOUT_MS)
    status = httpx.get(f"{api}/jobs/{job_id}", timeout=10).json()
    assert (status["state"], status["attempts_made"]) == ("waiting", 0)

    # resume: the job runs again (and, failing always, fails again)
    page.get_by_test_id("resume").click()
    _confirm(page)
    expect(page.locator("#paused-badge")).to_be_hidden(timeout=UI_TIMEOUT_MS)
    expect(_count(page, "failed")).to_have_text("3", timeout=UI_TIMEOUT_MS)
    expect(_count(page, "waiting")).to_have_text("0")
    expect(_count(page, "paused")).to_have_text("0")

    # the job's own page: payload, attempts and the failure
    page.locator(f'#jobs a[title="{job_id}"]').click()
    expect(page.get_by_test_id("job-state")).to_have_text("failed", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("job-reason")).to_contain_text("SimulatedFailure")
    expect(page.get_by_test_id("job-view")).to_contain_text('"fail_rate": 1')

    # queue-wide limits set over the API show on the queue's page (docs/flow-control.md)
    limits = {"rate": {"max": 5, "duration_ms": 1000}, "concurrency": 2}
    reply = httpx.put(f"{api}/queues/{settings.queue}/limits", json=limits, timeout=10)
    assert reply.status_code == 200, reply.text
    page.evaluate(f"location.hash = '#/q/{settings.queue}/failed'")
    badge = page.get_by_test_id("limits-badge")
    expect(badge).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(badge).to_have_text("limits: 5/s · 2 at once", timeout=UI_TIMEOUT_MS)

    assert page.evaluate("window.__sameDocument") == "yes", "the page was reloaded"
    assert errors == []
    page.close()


def test_first_tab_has_jobs_and_a_job_completed_after_a_retry_reads_as_completed(
    spawn: Callable[..., subprocess.Popen[str]],
    browser: Browser,
    settings: Settings,
    service_env: dict[str, str],
) -> None:
    """The default tab was an empty `waiting` beside failures, and a job that succeeded after
    a retry showed a red FAILURE block with every stack trace. The cleanup panel shows the
    runs `conveyor cleanup` recorded; the schedules panel runs and removes a schedule."""
    monitor_port, api_port = free_port(), free_port()
    monitor = f"http://127.0.0.1:{monitor_port}"
    api = f"http://127.0.0.1:{api_port}"
    monitor_proc = spawn("monitor", "--port", str(monitor_port))
    api_proc = spawn("api", "--port", str(api_port))
    spawn("worker")
    _wait_ready(monitor_proc, monitor + "/readyz")
    _wait_ready(api_proc, api + "/readyz")

    def enqueue(name: str, data: dict[str, Any], options: dict[str, Any]) -> str:
        body = {"name": name, "data": data, "options": options}
        reply = httpx.post(api + "/enqueue", json=body, timeout=10)
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    enqueue("simulate", {"duration_ms": 0, "fail_rate": 1}, {"attempts": 1})
    retried = enqueue("fail_first", {}, {"attempts": 2, "backoff": 50})
    wait_for_sync(
        lambda: httpx.get(f"{api}/jobs/{retried}", timeout=10).json()["state"] == "completed",
        timeout=60,
    )

    dry = run_cli("cleanup", "--once", "--dry-run", "--older-than", "1h", env=service_env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    yearly = {
        "name": "simulate",
        "data": {"duration_ms": 0},
        "cron": "0 0 1 1 *",
        "tz": "Asia/Tokyo",
    }
    reply = httpx.put(f"{api}/schedules/new-year", json=yearly, timeout=10)
    assert reply.status_code == 201, reply.text

    page = browser.new_page(viewport={"width": 1400, "height": 1050})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{monitor}/#/q/{settings.queue}")
    expect(page.get_by_test_id("live")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    expect(page).to_have_url(f"{monitor}/#/q/{settings.queue}/failed", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#jobs tbody tr[data-job-id]")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    processed = page.get_by_test_id("processed-all-time")
    assert "completed card" in (processed.get_attribute("title") or "")
    run = page.get_by_test_id("cleanup-run")
    expect(run).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(run).to_contain_text("0 / 0 / 0")  # nothing failed an hour ago
    expect(run.get_by_test_id("cleanup-dry-run")).to_be_visible()

    # the Schedules panel: a schedule made over the API, run now, then removed (docs/schedules.md)
    schedule = page.get_by_test_id("schedule")
    expect(schedule).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(schedule).to_contain_text("new-year")
    expect(schedule).to_contain_text("0 0 1 1 * Asia/Tokyo")
    expect(schedule.get_by_test_id("schedule-next")).to_contain_text("next in")
    schedule.get_by_test_id("schedule-run").click()
    _confirm(page)
    expect(page.locator("#toasts")).to_contain_text("Job run-new-year-", timeout=UI_TIMEOUT_MS)
    schedule.get_by_test_id("schedule-remove").click()
    _confirm(page)
    expect(page.get_by_test_id("schedules")).to_contain_text("No schedules.", timeout=UI_TIMEOUT_MS)
    assert httpx.get(f"{api}/schedules/new-year", timeout=10).status_code == 404

    page.goto(f"{monitor}/#/q/{settings.queue}/job/{retried}")
    expect(page.get_by_test_id("job-state")).to_have_text("completed", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("job-reason")).to_have_count(0)  # no red failure block
    history = page.get_by_test_id("job-attempt-history")
    expect(history).to_contain_text("the first attempt fails")
    assert history.locator("details").get_attribute("open") is None  # folded away
    view = page.get_by_test_id("job-view").inner_text().lower()
    assert view.index("return value") < view.index("attempt history")
    assert errors == []
    page.close()
