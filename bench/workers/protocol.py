"""The contract between ``bench.run`` and one worker process (Python side; worker.mjs mirrors it).

A worker process is started with its settings on the command line, then:

1. sets everything up (imports, connections, the worker object) and prints ``{"ready": true}``;
2. waits for ``go`` on stdin, notes the wall-clock time and starts taking jobs;
3. for every handler call whose job data has a ``k``, records ``[k, start wall time]``; a job
   whose data says ``"fail": true`` raises;
4. counts finish events (a completion, or a failed attempt whether retried or final) and stops
   by itself after ``--expect`` of them (0: only when told ``stop`` on stdin);
5. prints one JSON report (go and last-finish times, counts, the recorded starts, its RSS and
   the CPU seconds it used between go and the end), then shuts its worker down; the
   orchestrator kills it if that takes long.

Wall clocks (``time.time()``) are compared across processes: all run on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil


def common_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--redis", required=True, help="Redis URL")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefix", default="bull")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--expect", type=int, default=0, help="stop after this many finishes")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    return parser


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """What one worker process measures about itself."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.starts: list[tuple[Any, float]] = []
        self.finished = 0
        self.t_go = 0.0
        self.t_last = 0.0
        self._cpu_go = 0.0
        self._cpu_end = 0.0
        self.done = asyncio.Event()
        self.go = asyncio.Event()

    # --- called by the contender ---------------------------------------------------------------
    def job_started(self, data: Any) -> None:
        """Call at the very start of the handler with the job's data."""
        if not isinstance(data, dict):
            return
        if data.get("k") is not None:
            self.starts.append((data["k"], time.time()))
        if data.get("fail"):
            raise RuntimeError("bench: this job fails on purpose")

    def job_finished(self) -> None:
        """Call once per completion or failed attempt."""
        self.finished += 1
        self.t_last = time.time()
        if self.expect and self.finished >= self.expect:
            self.done.set()

    # --- the protocol --------------------------------------------------------------------------
    def listen_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        """Turn ``go`` and ``stop`` lines on stdin into events (a daemon thread reads them)."""

        def read() -> None:
            for line in sys.stdin:
                word = line.strip()
                if word == "go":
                    loop.call_soon_threadsafe(self._on_go)
                elif word == "stop":
                    loop.call_soon_threadsafe(self.done.set)
            loop.call_soon_threadsafe(self.done.set)  # the orchestrator went away

        threading.Thread(target=read, daemon=True, name="bench-stdin").start()

    def _on_go(self) -> None:
        self.t_go = time.time()
        self._cpu_go = cpu_seconds()
        self.go.set()

    def mark_end(self) -> None:
        """Call as soon as ``done`` is set, before shutting the worker down."""
        self._cpu_end = cpu_seconds()

    @staticmethod
    def ready() -> None:
        print(json.dumps({"ready": True}), flush=True)

    def report(self, **extra: Any) -> None:
        process = psutil.Process()
        doc = {
            "t_go": self.t_go,
            "t_last": self.t_last,
            "finished": self.finished,
            "starts": self.starts,
            "rss_mb": process.memory_info().rss / 2**20,
            "cpu_s": (self._cpu_end or cpu_seconds()) - self._cpu_go,
            **extra,
        }
        print(json.dumps(doc), flush=True)


def run_main(main: Callable[[], Any], loop_name: str) -> None:
    """asyncio.run(main()) on the chosen event loop."""
    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
