"""``conveyor <service>``: thin commands that parse, load settings, set up logs and call a
service. Every expected failure ends as one readable line on stderr and exit code 1."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from conveyor.config import Settings, load_settings
from conveyor.errors import ConveyorError
from conveyor.observability.logging import configure_logging

app = typer.Typer(
    name="conveyor",
    help="Conveyor: a distributed task queue for Python, in the BullMQ format on Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: flags without a `<bool>` metavar, and within 80 columns.
    rich_markup_mode=None,
)

R = TypeVar("R")


def _fail(message: str) -> None:
    typer.echo(f"conveyor: error: {message}", err=True)
    raise typer.Exit(1)


def _settings(**overrides: Any) -> Settings:
    if overrides.get("queue") is not None:
        overrides["queues"] = {}  # --queue: that queue alone, whatever CONVEYOR_QUEUES says
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _guard(call: Callable[[], R]) -> R:
    try:
        return call()
    except ConveyorError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise AssertionError("unreachable")


QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="Queue name [CONVEYOR_QUEUE].")]


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="Jobs at once per process.")
    ] = None,
    processes: Annotated[
        int | None, typer.Option("--processes", "-p", help="Worker processes to run.")
    ] = None,
    queue: QueueOpt = None,
) -> None:
    """Process jobs until SIGTERM/SIGINT, then finish active jobs within the grace period."""
    from conveyor.services import worker as service

    def go() -> int:
        settings = _settings(concurrency=concurrency, processes=processes, queue=queue)
        return service.run(settings)

    raise typer.Exit(_guard(go))


@app.command()
def produce(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Jobs to enqueue.")] = 100,
    rate: Annotated[
        float, typer.Option("--rate", "-r", min=0, help="Jobs per second (0: as fast as possible).")
    ] = 10.0,
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", min=0, max=1, help="Share of simulate jobs that fail.")
    ] = 0.1,
    duration_ms: Annotated[
        int, typer.Option("--duration-ms", min=0, help="Simulated work per job (ms).")
    ] = 2000,
    task: Annotated[str, typer.Option("--task", help="Task name to enqueue.")] = "simulate",
    queue: QueueOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Enqueue test jobs at a rate with a failure mix, with a progress bar and a summary."""
    from conveyor.services import producer as service

    def go() -> None:
        settings = _settings(queue=queue)
        plan = service.ProducePlan(
            count=count, rate=rate, task=task, duration_ms=duration_ms, fail_rate=fail_rate
        )
        summary = service.run(settings, plan, show_progress=not quiet and sys.stderr.isatty())
        typer.echo(
            f"enqueued {summary.enqueued} {task} jobs on {settings.queue!r} in "
            f"{summary.elapsed_s:.2f} s ({summary.rate:.0f} jobs/s)"
        )

    _guard(go)


# --- api command ------------------------------------------------------------------------------


@app.command()
def api(
    host: Annotated[str | None, typer.Option("--host", help="Address [CONVEYOR_API_HOST].")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port [CONVEYOR_API_PORT].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-w", min=1, help="Server processes.")
    ] = None,
) -> None:
    """Serve the HTTP API: POST /enqueue, job status, retry, cancel, health, OpenAPI."""
    from conveyor.services import api as service

    def go() -> None:
        service.run(_settings(api_host=host, api_port=port, api_workers=workers))

    _guard(go)


# --- monitor and stats commands ------------------------------------------------------------------


@app.command()
def monitor(
    host: Annotated[
        str | None, typer.Option("--host", help="Address [CONVEYOR_MONITOR_HOST].")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port [CONVEYOR_MONITOR_PORT].")
    ] = None,
) -> None:
    """Serve the live web dashboard, its JSON API and Prometheus /metrics (default :8001)."""
    from conveyor.services import monitor as service

    _guard(lambda: service.run(_settings(monitor_host=host, monitor_port=port)))


@app.command()
def stats(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with totals).")] = False,
) -> None:
    """Print a table of job counts per queue and state (every queue of the prefix)."""
    from conveyor.services.monitor import terminal

    _guard(lambda: terminal.run(_settings(), watch=watch, interval_s=interval, as_json=as_json))


@app.command()
def schedules(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    remove: Annotated[str | None, typer.Option("--remove", help="Remove this schedule.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run this schedule's task now.")] = None,
    queue: QueueOpt = None,
) -> None:
    """List the queue's schedules (next and last run, lag); remove one or run one now."""
    from conveyor.services import schedule_table

    _guard(
        lambda: schedule_table.run(
            _settings(queue=queue), as_json=as_json, remove=remove, run_now=run
        )
    )


# --- cleanup and up commands ---------------------------------------------------------------------


@app.command()
def cleanup(
    once: Annotated[
        bool, typer.Option("--once", help="Run once now and exit; the schedule is left alone.")
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Failed jobs older than this go: 7d, 12h, 90m, 3600."),
    ] = None,
    completed_older_than: Annotated[
        str | None,
        typer.Option("--completed-older-than", help="Also remove completed jobs older than this."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --once: show what would go, change nothing.")
    ] = False,
    queue: QueueOpt = None,
) -> None:
    """Remove old failed jobs and their failure records, on schedule or --once.

    Runs once per CONVEYOR_CLEANUP_INTERVAL_S across all replicas (the schedule is in Redis).
    """
    from conveyor.errors import ConfigurationError
    from conveyor.maintenance import parse_duration
    from conveyor.services import cleanup as service

    def go() -> int:
        if dry_run and not once:
            raise ConfigurationError("--dry-run only works with --once")
        failed_s = parse_duration(older_than) if older_than is not None else None
        done_s = parse_duration(completed_older_than) if completed_older_than is not None else None
        settings = _settings(queue=queue, failed_retention_s=failed_s, completed_retention_s=done_s)
        if not once:
            return service.run(settings)
        typer.echo(
            service.describe(
                service.run_once(settings, service.policy_from(settings), dry_run=dry_run)
            )
        )
        return 0

    raise typer.Exit(_guard(go))


@app.command()
def up(
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=0, max=64, help="Worker processes.")
    ] = 2,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Also run a producer, all on the queue 'demoQueue': jobs flow, some fail and "
            "retry.",
        ),
    ] = False,
    api_port: Annotated[
        int | None,
        typer.Option(
            "--api-port", min=1, max=65535, help="The API's port [CONVEYOR_API_PORT, 8000]."
        ),
    ] = None,
    monitor_port: Annotated[
        int | None,
        typer.Option(
            "--monitor-port",
            min=1,
            max=65535,
            help="The monitor's port [CONVEYOR_MONITOR_PORT, 8001].",
        ),
    ] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not run the API.")] = False,
    no_monitor: Annotated[
        bool, typer.Option("--no-monitor", help="Do not run the monitor.")
    ] = False,
    queue: QueueOpt = None,
) -> None:
    """Run the whole system here: Redis, API, workers, monitor and cleanup (Ctrl-C stops it)."""
    from conveyor.services import up as service

    def go() -> int:
        settings = _settings(queue=queue, api_port=api_port, monitor_port=monitor_port)
        commands = frozenset(
            c.name or c.callback.__name__ for c in app.registered_commands if c.callback
        )
        plan = service.UpPlan(
            workers=workers, demo=demo, api=not no_api, monitor=not no_monitor, commands=commands
        )
        return service.run(settings, plan)

    raise typer.Exit(_guard(go))


redis_app = typer.Typer(
    name="redis",
    help="The embedded Redis (used when CONVEYOR_REDIS_URL is unset).",
    no_args_is_help=True,
)
app.add_typer(redis_app)


@redis_app.command("status")
def redis_status() -> None:
    """Say whether the embedded Redis of CONVEYOR_DATA_DIR runs, where, and for how many."""
    from conveyor.embedded import EmbeddedRedis

    def go() -> None:
        embedded = EmbeddedRedis(_settings().data_dir)
        port = embedded.running_port()
        if port is None:
            typer.echo(f"not running (data in {embedded.folder})")
            return
        typer.echo(
            f"redis://127.0.0.1:{port}/0 (data in {embedded.folder}; "
            f"{embedded.users()} conveyor processes use it)"
        )

    _guard(go)


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop the embedded Redis now (it also stops when the last command using it exits)."""
    from conveyor.embedded import EmbeddedRedis

    def go() -> None:
        embedded = EmbeddedRedis(_settings().data_dir)
        stopped = embedded.stop()
        typer.echo("stopped" if stopped else f"not running (data in {embedded.folder})")

    _guard(go)


def import_from_cwd() -> None:
    """Let CONVEYOR_TASKS name modules in the current directory, as uvicorn and celery do.

    ``python -m conveyor.cli`` has the directory on ``sys.path`` already; the ``conveyor``
    console script does not. Worker and API processes started with ``spawn`` inherit it."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def main() -> None:
    import_from_cwd()
    app()


if __name__ == "__main__":
    main()
