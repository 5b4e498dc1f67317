"""``conveyor up``'s table of children and its pure decisions."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conveyor.config import Settings
from conveyor.errors import ConfigurationError
from conveyor.services.up import (
    DEMO_PRODUCE,
    Stage,
    UpPlan,
    banner,
    check_ports_free,
    child_env,
    children,
    demo_settings,
    describe_exit,
)

ALL = frozenset({"api", "worker", "monitor", "cleanup", "produce"})


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, api_port=18080, monitor_port=18081, shutdown_grace_s=7)


def test_the_whole_system(settings: Settings) -> None:
    specs = children(settings, UpPlan(workers=3, demo=True, commands=ALL))
    table = [(s.name, s.command[0], s.stage, s.restart) for s in specs]
    assert table == [
        ("api", "api", Stage.INTAKE, "always"),
        ("worker-1", "worker", Stage.WORKERS, "always"),
        ("worker-2", "worker", Stage.WORKERS, "always"),
        ("worker-3", "worker", Stage.WORKERS, "always"),
        ("monitor", "monitor", Stage.SUPPORT, "always"),
        ("cleanup", "cleanup", Stage.SUPPORT, "always"),
        ("producer", "produce", Stage.INTAKE, "on-failure"),
    ]
    by_name = {s.name: s for s in specs}
    assert by_name["api"].url == "http://127.0.0.1:18080"
    assert by_name["api"].env == {"CONVEYOR_API_PORT": "18080"}
    assert by_name["monitor"].url == "http://127.0.0.1:18081"
    assert by_name["worker-2"].env == {"CONVEYOR_PROCESSES": "1"}
    assert by_name["worker-2"].stop_timeout_s > settings.shutdown_grace_s  # grace, then kill
    assert by_name["producer"].command == DEMO_PRODUCE


@pytest.mark.parametrize(
    ("plan", "names"),
    [
        (UpPlan(workers=1, commands=ALL), ["api", "worker-1", "monitor", "cleanup"]),
        (UpPlan(workers=0, api=False, monitor=False, commands=ALL), ["cleanup"]),
        (UpPlan(workers=2, commands=frozenset({"worker", "cleanup"})),
         ["worker-1", "worker-2", "cleanup"]),  # no api/monitor commands: left out
        (UpPlan(workers=1, demo=True, cleanup=False, commands=ALL),
         ["api", "worker-1", "monitor", "producer"]),
    ],
)  # fmt: skip
def test_plans(settings: Settings, plan: UpPlan, names: list[str]) -> None:
    assert [s.name for s in children(settings, plan)] == names


def test_negative_workers_are_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="--workers"):
        children(settings, UpPlan(workers=-1, commands=ALL))


@pytest.mark.parametrize(("code", "text"), [(0, "0"), (3, "3"), (-15, "SIGTERM"), (-9, "SIGKILL"),
                                            (None, "running")])  # fmt: skip
def test_describe_exit(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_a_taken_port_is_refused_before_anything_starts(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = settings.model_copy(update={"monitor_port": port})
        with pytest.raises(ConfigurationError, match=f"port {port} for the monitor is in use"):
            check_ports_free(children(busy, UpPlan(commands=ALL)))
    check_ports_free(children(busy, UpPlan(commands=ALL)))  # free again


def test_banner_names_every_url(settings: Settings) -> None:
    plan = UpPlan(workers=2, demo=True, commands=ALL)
    text = banner(settings, plan, children(settings, plan), "redis://127.0.0.1:6390/0")
    assert "redis    redis://127.0.0.1:6390/0  (embedded" in text
    assert "api      http://127.0.0.1:18080" in text
    assert "monitor  http://127.0.0.1:18081" in text
    assert "workers  2 processes" in text
    assert "demo" in text


def test_the_demo_runs_on_its_own_queue_with_the_builtin_tasks(settings: Settings) -> None:
    """Leftover demo jobs on taskQueue met an app's worker; and an app's catalogue without
    `simulate` left the demo producer failing."""
    app = settings.model_copy(update={"tasks": ["myapp.tasks"], "queue": "taskQueue"})
    demo = demo_settings(app)
    assert demo.queue == "demoQueue"
    assert demo.tasks == ["myapp.tasks", "conveyor.tasks.builtin"]
    assert demo_settings(settings).tasks == ["conveyor.tasks.builtin"]
    env = child_env(demo, "redis://127.0.0.1:6390/0", {"PATH": "/bin", "CONVEYOR_QUEUE": "x"})
    assert env["CONVEYOR_QUEUE"] == "demoQueue"  # what up decided wins over the inherited
    assert env["CONVEYOR_TASKS"] == "myapp.tasks,conveyor.tasks.builtin"
    assert env["PATH"] == "/bin"
