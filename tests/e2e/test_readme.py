"""The README's path from the demo to your own app, walked as a new user walks it.

The code blocks of "Using it from Python" are read from README.md itself (so they cannot drift)
and run as written in an empty folder: ``myapp/tasks.py``, ``worker.py`` and ``enqueue.py``
are written from the Python blocks, the ``conveyor`` commands run through the installed console
script (not ``python -m``) on the embedded Redis, the curl line and ``enqueue.py`` enqueue jobs
that the worker completes, and then ``worker.py`` in the command's place completes another.
Only the API's port is changed (port 8000 may be taken here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import running_url
from conveyor.jobs import JobState
from conveyor.ports import free_port
from conveyor.testing import wait_for, wait_for_state, wait_for_sync

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECTION = "## Using it from Python"


@dataclass(frozen=True)
class Block:
    lang: str
    text: str

    def lines(self) -> list[str]:
        """Shell lines with their backslash continuations joined."""
        return [line for line in self.text.replace("\\\n", " ").splitlines() if line.strip()]


def readme_blocks(section: str = SECTION) -> list[Block]:
    text = (REPO / "README.md").read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    body = text[start : end if end != -1 else len(text)]
    return [Block(m[1], m[2]) for m in re.finditer(r"```(\w+)\n(.*?)```", body, re.S)]


def is_service(line: str) -> bool:
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words.pop(0)
    return bool(words) and words[0] == "conveyor"


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[subprocess.Popen[bytes]]]]:
    folder = tmp_path / "newapp"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    procs: list[subprocess.Popen[bytes]] = []
    yield folder, env, procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_service(line: str, folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = folder.parent / f"{len(list(folder.parent.glob('*.log')))}.log"
    with log.open("wb") as out:
        return subprocess.Popen(
            ["bash", "-c", f"exec env {line}"],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_api(line: str, folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start the API on a port picked now, once the embedded Redis listens: a port picked
    before it started could be the very port Redis then took (seen once in CI)."""
    env["CONVEYOR_API_PORT"] = str(free_port())
    return start_service(line, folder, env)


def run_line(line: str, folder: Path, env: dict[str, str]) -> str:
    line = line.replace("localhost:8000", f"localhost:{env['CONVEYOR_API_PORT']}")
    done = subprocess.run(
        ["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_python(path: str, folder: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "python"), path], cwd=folder, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def api_ready(env: dict[str, str]) -> bool:
    try:
        url = f"http://127.0.0.1:{env['CONVEYOR_API_PORT']}/readyz"
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def test_the_readme_path_from_tasks_to_completed_jobs(
    walk: tuple[Path, dict[str, str], list[subprocess.Popen[bytes]]],
) -> None:
    folder, env, procs = walk
    blocks = readme_blocks()
    programs: list[str] = []
    for block in blocks:
        if block.lang == "python":
            name = block.text.splitlines()[0].removeprefix("#").strip()
            assert re.fullmatch(r"[\w/]+\.py", name), f"a Python block names its file: {name}"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(block.text)
            if name != "myapp/tasks.py":
                programs.append(name)
    assert (folder / "myapp" / "tasks.py").exists()
    assert programs == ["worker.py", "enqueue.py"]

    shell = [line for block in blocks if block.lang == "bash" for line in block.lines()]
    services = [line for line in shell if is_service(line)]
    others = [line for line in shell if not is_service(line)]
    assert [shlex.split(s)[1:3] for s in services] == [["conveyor", "worker"], ["conveyor", "api"]]
    assert len(others) == 1
    assert others[0].startswith("curl ")

    # The worker first: it starts the embedded Redis that the API then finds.
    procs.append(start_service(services[0], folder, env))
    wait_for_sync(lambda: running_url(folder / ".conveyor"), timeout=60)
    procs.append(start_api(services[1], folder, env))
    wait_for_sync(lambda: api_ready(env), timeout=60, message="the API never became ready")

    answer = json.loads(run_line(others[0], folder, env))
    http_id = answer["id"]
    printed = run_python(programs[1], folder, env)
    python_id = re.fullmatch(r"enqueued (\S+)\n", printed)[1]  # type: ignore[index]

    settings = Settings(data_dir=folder / ".conveyor")
    async with QueueClient.from_settings(settings) as client:
        for job_id in (http_id, python_id):
            view = await wait_for_state(client, job_id, JobState.COMPLETED, timeout=60)
            assert view.info.return_value == {"url": "https://example.com/cat.png", "width": 800}

        # The worker of your own program instead of the command: it runs the next job.
        command_worker = procs.pop(0)
        os.killpg(command_worker.pid, signal.SIGTERM)
        assert command_worker.wait(60) == 0
        procs.insert(0, start_service(f"{BIN / 'python'} {programs[0]}", folder, env))
        printed = run_python(programs[1], folder, env)
        job_id = re.fullmatch(r"enqueued (\S+)\n", printed)[1]  # type: ignore[index]
        view = await wait_for_state(client, job_id, JobState.COMPLETED, timeout=60)
        assert view.info.return_value == {"url": "https://example.com/cat.png", "width": 800}

    url = running_url(folder / ".conveyor")
    for proc in reversed(procs):
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
    await wait_for(lambda: running_url(folder / ".conveyor") is None, timeout=30,
                   message=f"the embedded Redis at {url} outlived its last user")  # fmt: skip


async def test_the_readme_http_api_example_runs_as_written(
    walk: tuple[Path, dict[str, str], list[subprocess.Popen[bytes]]],
) -> None:
    """The HTTP API section's block, against `conveyor api` and `conveyor worker` with the
    built-in tasks (as `make up` runs them), on the embedded Redis of an empty folder."""
    folder, env, procs = walk
    [block] = [b for b in readme_blocks("## HTTP API") if b.lang == "bash"]
    procs.append(start_service("conveyor worker", folder, env))
    wait_for_sync(lambda: running_url(folder / ".conveyor"), timeout=60)
    procs.append(start_api("conveyor api", folder, env))
    wait_for_sync(lambda: api_ready(env), timeout=60, message="the API never became ready")

    job = json.loads(run_line(block.text, folder, env))
    assert job["name"] == "simulate"
    assert job["state"] in ("delayed", "waiting", "active")
    async with QueueClient.from_settings(Settings(data_dir=folder / ".conveyor")) as client:
        await wait_for_state(client, job["id"], JobState.COMPLETED, timeout=60)
    for proc in reversed(procs):
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0
