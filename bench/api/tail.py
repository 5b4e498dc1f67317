"""Where the API's tail latency comes from: one wrk run against an instrumented ``conveyor api``.

    .venv/bin/python bench/api/tail.py                       # 50 connections, 10 s
    .venv/bin/python bench/api/tail.py --connections 50 --duration 10 --env CONVEYOR_X=y

The server runs in a child process of this script (``--serve``) with probes that cost little:
``gc.callbacks`` time every collection by generation, a 1 ms timer measures how late the event
loop runs it (loop lag: the longest stretch of work between two looks at the timers), every
request is timed inside the app (first ASGI call to the last body byte sent), and the
batcher's pipelines are counted and timed. Only the wrk window counts (the warm-up does not).
Compare the server-side p99 with wrk's: what wrk sees beyond it is queueing in the kernel and
the HTTP parser, or CPU the server never got (wrk and Redis share the 2 cores). Not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

LAG_TICK_S = 0.001


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50": at(0.5),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": ordered[-1],
        "sum": sum(ordered),
    }


class Probes:
    """Event records (monotonic time, then values), flat in arrays: cheap to add to."""

    def __init__(self) -> None:
        # Flat arrays of doubles, not lists of tuples: the probes must not grow the heap
        # that the collector they measure has to scan.
        self.gc = array("d")  # end, generation, ms, collected
        self.lag = array("d")  # when, ms late
        self.requests = array("d")  # end, ms inside the app
        self.batches = array("d")  # end, operations, ms on the wire
        self._gc_start = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            self.gc.extend(
                (
                    time.monotonic(),
                    info["generation"],
                    (now - self._gc_start) * 1e3,
                    info["collected"],
                )
            )

    @staticmethod
    def rows(flat: Any, width: int) -> list[tuple[float, ...]]:
        return [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]

    def window(self, start: float, end: float) -> dict[str, Any]:
        def inside(flat: Any, width: int) -> list[Any]:
            return [r for r in self.rows(flat, width) if start <= r[0] <= end]

        gcs = inside(self.gc, 4)
        seconds = end - start
        return {
            "seconds": seconds,
            "gc": {
                str(g): {
                    "per_s": sum(1 for r in gcs if r[1] == g) / seconds,
                    **_quantiles([r[2] for r in gcs if r[1] == g]),
                }
                for g in (0, 1, 2)
            },
            "gc_ms_per_s": sum(r[2] for r in gcs) / seconds,
            "loop_lag_ms": _quantiles([r[1] for r in inside(self.lag, 2)]),
            "in_app_ms": _quantiles([r[1] for r in inside(self.requests, 2)]),
            "batch_ops": _quantiles([r[1] for r in inside(self.batches, 3)]),
            "batch_ms": _quantiles([r[2] for r in inside(self.batches, 3)]),
        }


def serve(port: int, out: Path) -> None:
    """The child: ``conveyor api`` with the probes, until SIGTERM; then the records to ``out``."""
    import asyncio

    from conveyor.config import Settings
    from conveyor.services.api import batcher as batcher_module
    from conveyor.services.api import server

    probes = Probes()
    gc.callbacks.append(probes.on_gc)

    batcher = batcher_module.PipelineBatcher
    send_batch, answered = batcher._send, batcher._answered
    written: dict[int, float] = {}

    def timed_send(self: Any, batch: Any, loop: Any) -> None:
        written[id(batch)] = time.perf_counter()
        send_batch(self, batch, loop)

    def timed_answered(self: Any, batch: Any, replies: list[Any]) -> None:
        began = written.pop(id(batch), None)
        if began is not None:
            probes.batches.extend(
                (time.monotonic(), len(batch.entries), (time.perf_counter() - began) * 1e3)
            )
        answered(self, batch, replies)

    batcher._send = timed_send  # type: ignore[method-assign]
    batcher._answered = timed_answered  # type: ignore[method-assign]

    def lag_tick(loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        probes.lag.extend((time.monotonic(), (now - due) * 1e3))
        loop.call_at(now + LAG_TICK_S, lag_tick, loop, now + LAG_TICK_S)

    create_app = server.create_app

    def instrumented(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)

        async def probe(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                loop = asyncio.get_running_loop()
                loop.call_at(loop.time() + LAG_TICK_S, lag_tick, loop, loop.time() + LAG_TICK_S)

                await app(scope, receive, send)
                return
            began = time.perf_counter()

            async def timed(message: Any) -> None:
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    probes.requests.extend((time.monotonic(), (time.perf_counter() - began) * 1e3))

            await app(scope, receive, timed)

        return probe

    server.create_app = instrumented  # type: ignore[assignment]
    settings = Settings(api_host="127.0.0.1", api_port=port)  # type: ignore[call-arg]
    try:
        server.run(settings)
    finally:
        out.write_text(
            json.dumps(
                {
                    "gc": probes.gc.tolist(),
                    "lag": probes.lag.tolist(),
                    "requests": probes.requests.tolist(),
                    "batches": probes.batches.tolist(),
                    "gc_threshold": gc.get_threshold(),
                    "gc_frozen": gc.get_freeze_count(),
                }
            )
        )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bench.api.run import HERE as API_HERE
    from bench.api.run import _wait_ready, parse_wrk

    from conveyor.embedded import RedisServer
    from conveyor.ports import free_port

    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        out = Path(tmp) / "probes.json"
        port = free_port()
        env = {
            **os.environ,
            "CONVEYOR_REDIS_URL": redis.url,
            "CONVEYOR_QUEUE": "bench",
            "CONVEYOR_LOG_LEVEL": "WARNING",
            **extra,
        }
        cmd = [sys.executable, __file__, "--serve", str(port), str(out)]
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            _wait_ready(port, proc)
            threads = min(args.threads, args.connections)  # wrk wants a connection each
            wrk = [
                "wrk", f"-t{threads}", f"-c{args.connections}", "--latency",
                "-s", str(API_HERE / "enqueue.lua"), f"http://127.0.0.1:{port}/enqueue",
            ]  # fmt: skip
            subprocess.run([*wrk, "-d2s"], check=True, capture_output=True)
            start = time.monotonic()
            text = subprocess.run(
                [*wrk, f"-d{args.duration:g}s"], check=True, capture_output=True, text=True
            ).stdout
            end = time.monotonic()
        finally:
            proc.terminate()
            proc.wait(30)
            redis.stop()
        records = json.loads(out.read_text())
    probes = Probes()
    for name in ("gc", "lag", "requests", "batches"):
        setattr(probes, name, array("d", records[name]))
    return {
        "env": extra,
        "wrk": parse_wrk(text),
        "gc_threshold": records["gc_threshold"],
        "gc_frozen": records["gc_frozen"],
        **probes.window(start, end),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "OUT"))
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--env", action="append", default=[], help="NAME=value for the server")
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return
    result = measure(args)
    print(json.dumps(result, indent=1, default=lambda v: round(v, 3)))
    lat = result["in_app_ms"]
    print(
        f"\nwrk: {result['wrk']['rps']:.0f} req/s, p50 {result['wrk']['p50_ms']:.2f} ms, "
        f"p99 {result['wrk']['p99_ms']:.2f} ms; in the app: p50 {lat.get('p50', 0):.2f} ms, "
        f"p99 {lat.get('p99', 0):.2f} ms; loop lag p99 {result['loop_lag_ms'].get('p99', 0):.2f} "
        f"max {result['loop_lag_ms'].get('max', 0):.2f} ms; gc {result['gc_ms_per_s']:.1f} ms/s "
        f"(gen2 {result['gc']['2']['per_s']:.2f}/s, max {result['gc']['2'].get('max', 0):.1f} ms)"
    )


if __name__ == "__main__":
    main()
