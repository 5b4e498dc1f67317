"""``conveyor <service>``: thin commands that parse, load settings, set up logs and call a
service. Every expected failure ends as one readable line on stderr and exit code 1."""

from __future__ import annotations

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
)

R = TypeVar("R")


def _fail(message: str) -> None:
    typer.echo(f"conveyor: error: {message}", err=True)
    raise typer.Exit(1)


def _settings(**overrides: Any) -> Settings:
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
