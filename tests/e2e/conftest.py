"""Process-level fixtures: run real `conveyor` commands against the session's Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from conveyor.config import Settings

REPO = Path(__file__).resolve().parents[2]
#: Debian's Chromium, started as this machine allows (no sandbox as root, no background
#: connections to a closed network).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "apt-get install chromium (Debian's package)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def service_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "CONVEYOR_REDIS_URL": settings.redis_url or "",
            "CONVEYOR_QUEUE": settings.queue,
            "CONVEYOR_PREFIX": settings.prefix,
            "CONVEYOR_TASKS": "tests.support.tasks",
            "CONVEYOR_DATA_DIR": str(settings.data_dir),
            "CONVEYOR_BACKOFF_DELAY_MS": "20",
            "CONVEYOR_LOG_LEVEL": "INFO",
        }
    )
    return env


@pytest.fixture
def spawn(
    service_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `python -m conveyor.cli ARGS` with the test's environment; killed at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        # Append mode: the children share this file's offset, and output_of's seek(0) while
        # they run must not make their next lines overwrite the start of the log.
        log = open(tmp_path / f"proc-{len(procs)}.log", "a+")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor.cli", *args],
            env={**service_env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            start_new_session=True,
        )
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.log.close()  # type: ignore[attr-defined]


def output_of(proc: subprocess.Popen[str]) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.flush()
    log.seek(0)
    return str(log.read())


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
