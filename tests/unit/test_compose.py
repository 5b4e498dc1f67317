"""compose.yaml and the Dockerfile cannot rot: every command is a real CLI command with real
options, every variable a real setting with a valid default. These tests only read the files;
tests/containers/compose-test.sh (`make compose-test`, run by CI) builds the image and runs the
stack with Podman."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from conveyor.cli import app
from conveyor.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"redis", "api", "worker", "producer", "monitor", "cleanup"}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def commands() -> dict[str, Any]:
    """The CLI's commands by name, as typer builds them."""
    group: Any = typer.main.get_command(app)
    return dict(group.commands)


def with_defaults(value: object) -> str:
    """A compose value as the container sees it when the shell sets nothing."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def conveyor_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if name != "redis"}


def test_the_seed_services_are_all_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_redis_keeps_jobs_and_never_evicts_them(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


@pytest.mark.parametrize("name", sorted(SERVICES - {"redis"}))
def test_each_service_waits_for_a_healthy_redis(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert service["environment"]["CONVEYOR_REDIS_URL"] == "redis://redis:6379/0"
    # Engines that ignore the condition (Podman 4) start it at once: it waits by itself.
    assert float(with_defaults(service["environment"]["CONVEYOR_REDIS_WAIT_S"])) >= 60


@pytest.mark.parametrize("name", sorted(SERVICES - {"redis"}))
def test_each_command_is_a_real_cli_command(
    compose: dict[str, Any], commands: dict[str, Any], name: str
) -> None:
    command, *args = compose["services"][name]["command"]
    assert command in commands, f"{name}: `conveyor {command}` is not a command"
    # Parsing checks every option and its value (types, bounds) without running the command.
    commands[command].make_context(command, list(args))


@pytest.mark.parametrize("name", sorted(SERVICES - {"redis"}))
def test_each_variable_is_a_real_setting_with_a_valid_default(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = compose["services"][name]["environment"]
    for key, value in environment.items():
        assert key.startswith("CONVEYOR_"), key
        field = key.removeprefix("CONVEYOR_").lower()
        assert field in Settings.model_fields, f"{name}: {key} is not a setting"
        monkeypatch.setenv(key, with_defaults(value))
    load_settings()  # every default value parses


def test_workers_run_as_several_replicas_and_get_their_grace(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert int(with_defaults(worker["deploy"]["replicas"])) >= 2
    assert worker["deploy"]["mode"] == "replicated"  # podman-compose runs one without it
    grace = float(worker["environment"]["CONVEYOR_SHUTDOWN_GRACE_S"])
    assert float(worker["stop_grace_period"].removesuffix("s")) > grace


def test_the_producer_is_optional(compose: dict[str, Any]) -> None:
    producer = compose["services"]["producer"]
    assert producer["profiles"] == ["demo"]
    assert producer["restart"] == "no"


@pytest.mark.parametrize(("name", "port_var"), [("api", "CONVEYOR_API_PORT"),
                                                ("monitor", "CONVEYOR_MONITOR_PORT")])  # fmt: skip
def test_http_services_listen_publish_and_check_the_same_port(
    compose: dict[str, Any], name: str, port_var: str
) -> None:
    service = compose["services"][name]
    port = service["environment"][port_var]
    host_var = port_var.replace("_PORT", "_HOST")
    assert service["environment"][host_var] == "0.0.0.0"
    assert [with_defaults(p).split(":")[-1] for p in service["ports"]] == [port]
    # Published on the host's loopback only unless the user opens it (no keys, no login).
    assert [with_defaults(p).split(":")[0] for p in service["ports"]] == ["127.0.0.1"]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])


def test_conveyor_services_share_one_image(compose: dict[str, Any]) -> None:
    images = {with_defaults(svc["image"]) for svc in conveyor_services(compose).values()}
    assert images == {"conveyor:latest"}
    # Built once: by one service that runs one container in the default profile.
    builders = [svc for svc in conveyor_services(compose).values() if "build" in svc]
    assert len(builders) == 1
    assert builders[0]["build"] == "."
    assert "deploy" not in builders[0]
    assert "profiles" not in builders[0]


def test_dockerfile_small_non_root_with_a_healthcheck(commands: dict[str, Any]) -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert stages[-1] == "python:${PYTHON_VERSION}-slim"
    # Nothing but the python image and a package index: no syntax frontend, no uv image.
    assert set(stages) == {"python:${PYTHON_VERSION}-slim"}
    assert not re.search(r"^# *syntax=", text, flags=re.M | re.I)
    assert "--from=" not in text.replace("--from=build", "")
    assert re.search(r"^ARG UV_VERSION=\d+\.\d+\.\d+$", text, flags=re.M)
    assert '"uv==${UV_VERSION}"' in text
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, flags=re.M)
    user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert user
    assert not user[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*\\\n\s+CMD ", text, flags=re.M)
    assert "--no-dev" in text
    assert re.search(r'^ENTRYPOINT \["conveyor"\]$', text, flags=re.M)
    default = re.findall(r'^CMD \["(\w+)"\]$', text, flags=re.M)
    assert default[-1] in commands
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # everything is left out but what the build copies
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M)
    for sources in copied:
        for source in sources.split():
            assert f"!{source.rstrip('/')}" in {i.rstrip("/") for i in ignored}, source
