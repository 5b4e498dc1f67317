"""Node.js BullMQ beside Conveyor on the same Redis, queue and prefix.

The pinned npm packages (``node/package.json`` + ``package-lock.json``) are installed once per
lock file into ``node/node_modules`` (gitignored) with ``npm ci --ignore-scripts`` and reused
while the lock file is unchanged; ``node5/`` pins Node.js BullMQ 5 the same way (``node5``
fixture, ``test_bullmq5.py``). Node scripts run as subprocesses: ``queue.mjs`` (a producer
and the Queue getters a dashboard uses; one ``serve`` process per session answers every test)
and ``worker.mjs`` (a Node BullMQ worker, one process per use). They get the Redis URL, prefix
and queue through the environment or each request and answer JSON lines on stdout.

No Node.js or npm, or an npm registry that cannot be reached, fails these tests loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from conveyor.config import Settings
from conveyor.registry import TaskRegistry
from conveyor.testing import wait_for
from tests.interop.tasks import Runs, build_registry

#: The Node side: package.json + package-lock.json + the scripts. Point
#: CONVEYOR_INTEROP_NODE_DIR at a copy with other pins to try other BullMQ versions.
NODE_DIR = Path(
    os.environ.get("CONVEYOR_INTEROP_NODE_DIR") or Path(__file__).resolve().parent / "node"
)
#: Node.js BullMQ 5, pinned beside: its pause and resume RENAME wait and paused (issue 12).
NODE5_DIR = Path(__file__).resolve().parent / "node5"
#: Written in node_modules after a successful install: the sha256 of the lock file it installed.
STAMP_NAME = ".conveyor-installed"
NODE_MAJOR_MIN = 20
NPM_TIMEOUT_S = 180
SCRIPT_TIMEOUT_S = 30

NodeCall = Callable[..., Awaitable[Any]]


def _lock_digest(node_dir: Path) -> str:
    return hashlib.sha256((node_dir / "package-lock.json").read_bytes()).hexdigest()


def _installed(node_dir: Path, digest: str) -> bool:
    stamp = node_dir / "node_modules" / STAMP_NAME
    return stamp.is_file() and stamp.read_text().strip() == digest


def _check_node() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("the interop tests need Node.js >= 20 and npm on PATH", pytrace=False)
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR_MIN:
        pytest.fail(
            f"the interop tests need Node.js >= {NODE_MAJOR_MIN}, not {version}", pytrace=False
        )


def _install(node_dir: Path) -> Path:
    """The packages pinned in ``node_dir``, installed (once per lock file) in its node_modules."""
    _check_node()
    digest = _lock_digest(node_dir)
    lock_path = Path(tempfile.gettempdir()) / (
        "conveyor-interop-" + hashlib.sha256(str(node_dir).encode()).hexdigest()[:12] + ".lock"
    )
    with open(lock_path, "w") as lock:  # one installer at a time (pytest-xdist, parallel runs)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed(node_dir, digest):
            # --ignore-scripts: no install scripts, so no native builds or downloads beyond
            # the npm packages themselves.
            done = subprocess.run(
                ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=node_dir,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"npm ci failed in {node_dir}:\n{done.stdout}\n{done.stderr}", pytrace=False
                )
            (node_dir / "node_modules" / STAMP_NAME).write_text(digest)
    return node_dir / "node_modules"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The pinned bullmq + ioredis, installed (once per lock file) under tests/interop/node."""
    return _install(NODE_DIR)


@pytest.fixture(scope="session")
def node5_modules() -> Path:
    """Node.js BullMQ 5 + ioredis, installed (once per lock file) under tests/interop/node5."""
    return _install(NODE5_DIR)


@pytest.fixture
def node_env(settings: Settings) -> dict[str, str]:
    """The environment the Node scripts read: this test's Redis, prefix and queue."""
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "BULL_PREFIX": settings.prefix,
        "QUEUE": settings.queue,
    }


class NodeDriver:
    """One ``node queue.mjs serve`` for the session: requests and answers as JSON lines."""

    def __init__(self, redis_url: str, log: Path, node_dir: Path = NODE_DIR) -> None:
        self.log = log
        with open(log, "w") as stderr:  # a file, so a chatty Node can never block on a pipe
            self.proc = subprocess.Popen(
                ["node", "queue.mjs", "serve"],
                cwd=node_dir,
                env={**os.environ, "REDIS_URL": redis_url},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                encoding="utf-8",
            )
        self._lock = threading.Lock()

    def request(self, message: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"node queue.mjs serve exited: {self.stderr()}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"node {message['command']} failed: {answer['error']}")
        return answer["ok"]

    def stderr(self) -> str:
        return self.log.read_text()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # serve ends at end of input
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def serve_node(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeDriver]:
    """A NodeDriver on ``redis_url`` for a fixture to yield, closed when the fixture ends."""
    driver = NodeDriver(redis_url, tmp_path_factory.mktemp("node") / "queue-serve.log")
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture(scope="session")
def node_driver(
    node_modules: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDriver]:
    yield from serve_node(redis_url, tmp_path_factory)


def _caller(driver: NodeDriver, settings: Settings) -> NodeCall:
    async def call(command: str, arg: Any = None, *, queue: str | None = None) -> Any:
        message = {
            "command": command,
            "arg": arg,
            "prefix": settings.prefix,
            "queue": queue or settings.queue,
        }
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(driver.request, message), SCRIPT_TIMEOUT_S
            )
        except TimeoutError:
            driver.proc.kill()  # unblocks the reading thread; later calls fail loudly
            raise

    return call


@pytest.fixture
def node(node_driver: NodeDriver, settings: Settings) -> NodeCall:
    """``await node(command, arg, queue=...)``: Node's Queue on this test's prefix and queue
    (or another ``queue``) runs ``command`` (see ``node/queue.mjs``); answers its JSON."""
    return _caller(node_driver, settings)


@pytest.fixture(scope="session")
def node5_driver(
    node5_modules: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDriver]:
    log = tmp_path_factory.mktemp("node5") / "queue-serve.log"
    driver = NodeDriver(redis_url, log, NODE5_DIR)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def node5(node5_driver: NodeDriver, settings: Settings) -> NodeCall:
    """``await node5(command, arg)``: a Node.js BullMQ 5 Queue on this test's prefix and queue
    (see ``node5/queue.mjs``: add, pause, resume, getters)."""
    return _caller(node5_driver, settings)


def _log_file(path: Path) -> IO[str]:
    return open(path, "w")  # the caller closes it


class NodeWorker:
    """A running ``worker.mjs``: its JSON events, collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str, log: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode().strip()
            if text:
                self.events.append(json.loads(text))

    def of(self, event: str, job_id: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event"] == event and (job_id is None or e.get("id") == job_id)
        ]

    async def wait(self, event: str, job_id: str | None = None, timeout: float = 15) -> Any:
        def seen() -> list[dict[str, Any]]:
            if self.proc.returncode is not None and not self._reader.done():
                return []  # the last lines may still be on their way
            if self.proc.returncode is not None and not self.of(event, job_id):
                raise AssertionError(
                    f"node worker exited ({self.proc.returncode}):\n{self.log.read_text()}"
                )
            return self.of(event, job_id)

        return await wait_for(
            seen,
            timeout=timeout,
            message=f"node worker: no {event!r} event for {job_id} (events: {self.events})",
        )

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@pytest.fixture
async def node_worker(
    node_modules: Path, node_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[NodeWorker]]]:
    """``await node_worker(concurrency=1)`` starts a Node BullMQ worker on this test's queue
    and waits until it is ready; every one is stopped at teardown."""
    started: list[NodeWorker] = []

    async def start(
        *, concurrency: int = 1, name: str | None = None, limiter: dict[str, int] | None = None
    ) -> NodeWorker:
        name = name or f"node-{len(started)}"
        log = tmp_path / f"{name}.log"
        options: dict[str, Any] = {"concurrency": concurrency, "name": name}
        if limiter is not None:
            options["limiter"] = limiter  # BullMQ Worker's {max, duration}
        with _log_file(log) as stderr:
            proc = await asyncio.create_subprocess_exec(
                "node",
                "worker.mjs",
                json.dumps(options),
                cwd=NODE_DIR,
                env=node_env,
                stdin=asyncio.subprocess.PIPE,  # closed when the test ends: the worker stops
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        worker = NodeWorker(proc, name, log)
        started.append(worker)
        await worker.wait("ready")
        return worker

    yield start
    for worker in started:
        await worker.stop()
    for worker in started:
        errors = worker.of("error")
        assert not errors, f"the node worker reported errors: {errors}"


@pytest.fixture
def runs() -> Runs:
    return Runs()


@pytest.fixture
def registry(runs: Runs) -> TaskRegistry:
    return build_registry(runs)
