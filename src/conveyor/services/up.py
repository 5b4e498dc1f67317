"""``conveyor up``: the whole system on one machine, as supervised child processes.

Redis (the embedded one unless CONVEYOR_REDIS_URL is set) runs first; then the API, N
workers, the monitor, the cleanup and, with ``--demo``, a producer, each one a
``conveyor <service>`` process whose output is shown with its name in front. A child that
crashes is restarted with backoff. On SIGINT or SIGTERM everything stops in order: intake
first (producer, API), then the workers (given their grace to finish active jobs), then the
monitor and cleanup, then Redis. A second signal kills what is left at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, TextIO

from conveyor.config import DEFAULT_TASKS, Settings
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.log import get_logger
from conveyor.ports import bind_error
from conveyor.redis import redact_url
from conveyor.registry import load_registry
from conveyor.services.redis_connection import redis_url
from conveyor.services.restarts import RestartPolicy

log = get_logger("conveyor.up")

#: A signal this soon after the first is the same Ctrl-C, echoed by a launcher.
SIGNAL_ECHO_S = 1.5

#: How a child is started: ``python -m conveyor.cli <command...>`` with this interpreter.
CLI = (sys.executable, "-m", "conveyor.cli")
#: How a command reports a broken setting before it exits (see ``conveyor.cli``).
ERROR_LINE = b"conveyor: error:"
#: A child that ran this long before exiting counts as having started well (backoff resets).
STABLE_S = 10.0
#: When a crashed child runs again (the same rule as ``worker --processes``).
RESTART = RestartPolicy(stable_after_s=STABLE_S)
#: How long a non-worker child gets to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 10.0
#: After a child exits, how long its remaining output may take to arrive.
PUMP_DRAIN_S = 2.0
#: How long ``up`` waits for the API and monitor to accept connections before saying so.
READY_TIMEOUT_S = 30.0
#: The demo producer: a slow, endless stream of simulated jobs, many of which fail.
DEMO_PRODUCE = (
    "produce",
    "--count",
    "1000000",
    "--rate",
    "2",
    "--fail-rate",
    "0.4",
    "--duration-ms",
    "1000",
    "--quiet",
)
#: Demo jobs get 3 attempts, so permanent failures (and their records) show up within seconds.
DEMO_ENV = {"CONVEYOR_RETRIES": "2"}
#: ``up --demo`` runs on a queue of its own, so demo jobs never mix with an app's.
DEMO_QUEUE = "demoQueue"

Restart = Literal["always", "on-failure"]


class Stage(IntEnum):
    """Shutdown order: lower stages stop first."""

    INTAKE = 0  # producer, API: no new jobs
    WORKERS = 1  # finish or hand back active jobs
    SUPPORT = 2  # monitor, cleanup


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process: ``conveyor <command...>``."""

    name: str
    command: tuple[str, ...]
    stage: Stage
    restart: Restart = "always"
    stop_timeout_s: float = STOP_TIMEOUT_S
    env: Mapping[str, str] = field(default_factory=dict)
    #: Where it serves HTTP, shown in the banner and checked for readiness.
    url: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class UpPlan:
    """What ``conveyor up`` runs."""

    workers: int = 2
    demo: bool = False
    api: bool = True
    monitor: bool = True
    cleanup: bool = True
    #: The CLI's commands: a service whose command does not exist is left out.
    commands: frozenset[str] = frozenset()


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def children(settings: Settings, plan: UpPlan) -> list[ChildSpec]:
    """The table of processes to run, in start order."""
    if plan.workers < 0:
        raise ConfigurationError("--workers must be at least 0")
    specs: list[ChildSpec] = []
    has = plan.commands.__contains__
    if plan.api and has("api"):
        host = _shown_host(settings.api_host)
        specs.append(
            ChildSpec(
                "api",
                ("api",),
                Stage.INTAKE,
                env={"CONVEYOR_API_PORT": str(settings.api_port)},
                url=f"http://{host}:{settings.api_port}",
                port=settings.api_port,
            )
        )
    grace = settings.shutdown_grace_s + STOP_TIMEOUT_S
    for index in range(1, plan.workers + 1):
        specs.append(
            ChildSpec(
                f"worker-{index}",
                ("worker",),
                Stage.WORKERS,
                stop_timeout_s=grace,
                env={"CONVEYOR_PROCESSES": "1"},
            )
        )
    if plan.monitor and has("monitor"):
        host = _shown_host(settings.monitor_host)
        specs.append(
            ChildSpec(
                "monitor",
                ("monitor",),
                Stage.SUPPORT,
                env={"CONVEYOR_MONITOR_PORT": str(settings.monitor_port)},
                url=f"http://{host}:{settings.monitor_port}",
                port=settings.monitor_port,
            )
        )
    if plan.cleanup and has("cleanup"):
        specs.append(ChildSpec("cleanup", ("cleanup",), Stage.SUPPORT))
    if plan.demo and has("produce"):
        specs.append(
            ChildSpec("producer", DEMO_PRODUCE, Stage.INTAKE, restart="on-failure", env=DEMO_ENV)
        )
    return specs


def describe_exit(code: int | None) -> str:
    """``0``, ``3`` or ``SIGTERM`` (asyncio reports death by signal N as -N)."""
    if code is None:
        return "running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return str(code)


def failed_to_start(child: _Child, code: int, ran_s: float) -> bool:
    """Whether a child's exit is a failure to start (a setting, the catalogue, Redis), which a
    restart would only repeat: its first run ended soon, non-zero, with a ``conveyor: error``
    line. Crashes of a child that was running are restarted."""
    return child.starts == 1 and code != 0 and ran_s < STABLE_S and child.error_line is not None


def check_ports_free(specs: Sequence[ChildSpec], host: str = "127.0.0.1") -> None:
    """Fail early, with the option to change, when a port a child needs is taken."""
    for spec in specs:
        if spec.port is None:
            continue
        exc = bind_error(host, spec.port)
        if exc is not None:
            raise ConfigurationError(
                f"port {spec.port} for the {spec.name} is in use ({exc.strerror}); "
                f'choose another with --{spec.name}-port (make up UP_ARGS="--{spec.name}-port '
                f'N") or stop what uses it'
            ) from exc


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the child if ``up`` itself dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.starts = 0
        #: The last ``conveyor: error: ...`` line it printed (a failure to start says why).
        self.error_line: str | None = None


class Supervisor:
    """Starts the children, restarts the ones that crash, and stops them all in order."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        env: Mapping[str, str],
        *,
        out: TextIO | None = None,
        cli: Sequence[str] = CLI,
    ) -> None:
        self.children = [_Child(spec) for spec in specs]
        self.env = dict(env)
        self.out = out or sys.stdout
        self.cli = tuple(cli)
        self.stop_requested = asyncio.Event()
        self._first_signal_at = 0.0
        #: The stage being stopped during shutdown (None before it begins).
        self.stopping: Stage | None = None
        self._width = max([len(s.name) for s in specs] + [7])
        self._colour = self.out.isatty()
        self._out_closed = False
        #: Why ``up`` gave up: a child failed while starting, so restarts cannot help.
        self.start_error: str | None = None

    # --- output ----------------------------------------------------------------------------------
    def _label(self, index: int, name: str) -> str:
        text = f"{name:<{self._width}} |"
        if not self._colour:
            return text
        return f"\x1b[{31 + index % 6}m{text}\x1b[0m"

    async def _pump(self, label: str, stream: asyncio.StreamReader, child: _Child) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the buffer: show it in pieces
                line = await stream.read(65_536)
            if not line:
                return
            if line.startswith(ERROR_LINE):
                child.error_line = line.decode(errors="replace").strip()
            if self._out_closed:  # keep draining the child's pipe so it never blocks
                continue
            try:
                self.out.write(f"{label} {line.decode(errors='replace').rstrip()}\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):  # `conveyor up | head`: the reader left
                self._out_closed = True

    # --- one child -------------------------------------------------------------------------------
    async def _spawn(self, child: _Child) -> asyncio.subprocess.Process:
        env = {**self.env, **child.spec.env}
        process = await asyncio.create_subprocess_exec(
            *self.cli,
            *child.spec.command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only `up`, which stops children in order
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            limit=1 << 20,
        )
        child.process = process
        child.starts += 1
        return process

    async def _keep(self, index: int, child: _Child) -> None:
        spec = child.spec
        label = self._label(index, spec.name)
        crashes = 0
        while not self.stop_requested.is_set():
            started = time.monotonic()
            process = await self._spawn(child)
            if self.stop_requested.is_set():  # shutdown began while it was starting
                process.terminate()
            log.info("child_started", name=spec.name, pid=process.pid, start=child.starts)
            assert process.stdout is not None
            pump = asyncio.create_task(self._pump(label, process.stdout, child))
            code = await process.wait()
            # Output still held open by an orphaned grandchild must not hang the supervisor.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pump, PUMP_DRAIN_S)
            if self.stop_requested.is_set():
                return
            if code == 0 and spec.restart == "on-failure":
                log.info("child_finished", name=spec.name)
                return
            if failed_to_start(child, code, time.monotonic() - started):
                self._give_up(child)
                return
            crashes, delay = RESTART.after_exit(crashes, time.monotonic() - started)
            log.error(
                "child_exited",
                name=spec.name,
                pid=process.pid,
                exit=describe_exit(code),
                restart_in_s=delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), delay)

    def _give_up(self, child: _Child) -> None:
        assert child.error_line is not None
        reason = child.error_line.removeprefix(ERROR_LINE.decode()).strip()
        self.start_error = f"the {child.spec.name} could not start: {reason}"
        log.error("child_failed_to_start", name=child.spec.name)
        self.request_stop()

    # --- the whole -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """First call: stop in order. A second call (a second Ctrl-C): kill everything now.

        One Ctrl-C can arrive twice: the terminal signals the whole process group, and a
        launcher such as ``uv run`` or ``make`` forwards it again. Signals within
        ``SIGNAL_ECHO_S`` of the first count as that one."""
        now = time.monotonic()
        if self.stop_requested.is_set():
            if now - self._first_signal_at < SIGNAL_ECHO_S:
                return
            log.warning("up_killing", reason="second signal")
            self._signal_all(signal.SIGKILL)
            return
        log.info("up_stopping", next="a second signal kills at once")
        self._first_signal_at = now
        self.stop_requested.set()

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            self._signal(child, sig)

    @staticmethod
    def _signal(child: _Child, sig: signal.Signals) -> None:
        """SIGTERM goes to the child, which stops its own children; SIGKILL to its whole
        process group (it leads one), so nothing it started outlives it."""
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig is signal.SIGKILL:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    def start(self) -> None:
        for index, child in enumerate(self.children):
            child.task = asyncio.create_task(self._keep(index, child), name=child.spec.name)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Log when each HTTP child accepts connections (or that it did not in time)."""

        async def one(spec: ChildSpec) -> None:
            assert spec.port is not None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not self.stop_requested.is_set():
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", spec.port)
                    writer.close()
                    log.info("child_ready", name=spec.name, url=spec.url)
                    return
                await asyncio.sleep(0.2)
            if not self.stop_requested.is_set():
                log.warning("child_not_ready", name=spec.name)

        await asyncio.gather(*(one(c.spec) for c in self.children if c.spec.port is not None))

    async def shutdown(self) -> None:
        """Stop the children stage by stage: SIGTERM, wait their timeout, then SIGKILL."""
        self.stop_requested.set()
        for stage in Stage:
            group = [c for c in self.children if c.spec.stage is stage and c.task is not None]
            if not group:
                continue
            self.stopping = stage
            log.info("stopping", stage=stage.name.lower(), children=len(group))
            for child in group:
                self._signal(child, signal.SIGTERM)
            timeout = max(c.spec.stop_timeout_s for c in group)
            tasks = [c.task for c in group if c.task is not None]
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for child in group:
                if child.task in late:
                    log.warning("child_killed", name=child.spec.name)
                    self._signal(child, signal.SIGKILL)
            await asyncio.gather(*tasks, return_exceptions=True)
            for child in group:
                code = child.process.returncode if child.process else None
                log.info("child_stopped", name=child.spec.name, exit=describe_exit(code))

    async def run(self) -> None:
        """Start everything and supervise until a stop is requested; then shut down."""
        self.start()
        ready = asyncio.create_task(self.wait_ready())
        try:
            await self.stop_requested.wait()
        finally:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            await self.shutdown()


def banner(settings: Settings, plan: UpPlan, specs: Sequence[ChildSpec], url: str) -> str:
    embedded = "" if settings.redis_url else f"  (embedded, data in {settings.data_dir}/redis)"
    lines = [f"conveyor up: queue {settings.queue!r}", f"  redis    {redact_url(url)}{embedded}"]
    for spec in specs:
        if spec.url:
            lines.append(f"  {spec.name:<8} {spec.url}")
    workers = sum(1 for s in specs if s.stage is Stage.WORKERS)
    lines.append(f"  workers  {workers} process{'es' if workers != 1 else ''}")
    if plan.demo:
        lines.append(
            "  demo     a producer enqueues 2 simulate jobs a second, 40% of attempts fail"
        )
    lines.append("  Ctrl-C to stop (twice to kill)")
    return "\n".join(lines)


async def supervise(settings: Settings, plan: UpPlan, url: str, out: TextIO) -> None:
    specs = children(settings, plan)
    env = child_env(settings, url, os.environ)
    supervisor = Supervisor(specs, env, out=out)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # HUP: the terminal closed
        loop.add_signal_handler(sig, supervisor.request_stop)
    out.write(banner(settings, plan, specs, url) + "\n")
    out.flush()
    await supervisor.run()
    if supervisor.start_error is not None:
        raise ConveyorError(supervisor.start_error)


def child_env(settings: Settings, url: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of every child: ``base`` plus what ``up`` decided (the Redis, the
    queue of ``--queue`` or the demo, the catalogue)."""
    return {
        **base,
        "CONVEYOR_REDIS_URL": url,
        "CONVEYOR_QUEUE": settings.queue,
        "CONVEYOR_TASKS": ",".join(settings.tasks),
        "PYTHONUNBUFFERED": "1",
    }


def demo_settings(settings: Settings) -> Settings:
    """``--demo``: its own queue, and the built-in tasks (``simulate``) beside the app's."""
    tasks = settings.tasks if DEFAULT_TASKS in settings.tasks else [*settings.tasks, DEFAULT_TASKS]
    return settings.model_copy(update={"queue": DEMO_QUEUE, "tasks": tasks})


def run(settings: Settings, plan: UpPlan, out: TextIO | None = None) -> int:
    """Run until SIGINT/SIGTERM; answers the exit code (0 after an orderly stop)."""
    if plan.demo:
        settings = demo_settings(settings)
    check_ports_free(children(settings, plan))
    # A catalogue that does not import is one error here, before any child starts.
    load_registry(settings.tasks)
    with redis_url(settings) as url:
        asyncio.run(supervise(settings, plan, url, out or sys.stdout))
    log.info("up_stopped")
    return 0
