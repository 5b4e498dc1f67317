"""Broken settings through the real CLI in a subprocess: one ``conveyor: error:`` line each."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import run_cli

pytestmark = pytest.mark.e2e

BAD_PORT = "redis://:s3cret@127.0.0.1:notaport/0"


@pytest.mark.parametrize(
    "command",
    [["api"], ["worker"], ["monitor"], ["cleanup"], ["stats"], ["produce", "-n", "1"], ["up"]],
)
def test_a_bad_port_in_the_redis_url_is_one_line_for_every_command(
    service_env: dict[str, str], command: list[str]
) -> None:
    result = run_cli(*command, env={**service_env, "CONVEYOR_REDIS_URL": BAD_PORT}, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conveyor: error: invalid settings: CONVEYOR_REDIS_URL")
    assert "'notaport' is not a number" in lines[0]
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://127.0.0.1:0/0", "the port '0'"),
        ("redis://127.0.0.1:70000/0", "the port '70000'"),
        ("redis://127.0.0.1:6379/zero", "the database 'zero'"),
        ("redis://:pw@/0", "names no host"),
        ("unix://", "needs the socket's path"),
        ("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380", "names no master"),
    ],
)
def test_other_malformed_redis_urls_are_one_line(
    service_env: dict[str, str], url: str, fragment: str
) -> None:
    result = run_cli("stats", env={**service_env, "CONVEYOR_REDIS_URL": url}, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
