"""docs/configuration.md is generated from the settings model and cannot drift from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from conveyor.config import Settings

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "uv run python scripts/gen_config_docs.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", REPO / "scripts" / "gen_config_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_matches_the_code(generator: ModuleType) -> None:
    written = (REPO / "docs" / "configuration.md").read_text()
    assert written == generator.render(), f"docs/configuration.md is out of date: run {REGENERATE}"
    assert generator.main(["--check"]) == 0


def test_every_setting_has_a_row_and_a_meaning(generator: ModuleType) -> None:
    text = generator.render()
    for name, info in Settings.model_fields.items():
        assert text.count(f"| `CONVEYOR_{name.upper()}` |") == 1, name
        assert info.description, f"{name} has no description"


def test_rows_are_grouped_by_the_sections_of_config_py(generator: ModuleType) -> None:
    titles = [title for title, _ in generator.sections()]
    for expected in ("Redis", "Queue", "Worker", "Cleanup service (conveyor cleanup)", "Logging"):
        assert expected in titles
    grouped = dict(generator.sections())
    assert grouped["Cleanup service (conveyor cleanup)"][:3] == [
        "cleanup_interval_s", "failed_retention_s", "completed_retention_s",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "type_text", "default"),
    [
        ("redis_url", "string, optional", "unset"),
        ("concurrency", "integer, ≥ 1, ≤ 10000", "`10`"),
        ("eviction_check", "one of `refuse`, `warn`", "`refuse`"),
        ("tasks", "list of strings (comma-separated)", "`conveyor.tasks.builtin`"),
        ("failed_retention_s", "number, ≥ 0", "`604800`"),
        ("completed_retention_s", "number, ≥ 0, optional", "unset"),
        ("log_level", "one of `DEBUG`, `INFO`, `WARNING`, `ERROR`", "`INFO`"),
        ("data_dir", "path", "`.conveyor`"),
        ("queue", "string, not empty", "`taskQueue`"),
    ],
)
def test_types_and_defaults_read_as_a_user_writes_them(
    generator: ModuleType, field: str, type_text: str, default: str
) -> None:
    info = Settings.model_fields[field]
    assert generator.type_text(info) == type_text
    assert generator.default_text(info) == default


def test_angle_brackets_stay_visible(generator: ModuleType) -> None:
    assert generator._cell("at <prefix>:<id> or `Bearer <key>` | x") == (
        "at &lt;prefix&gt;:&lt;id&gt; or `Bearer <key>` \\| x"
    )
