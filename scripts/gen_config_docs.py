"""Write docs/configuration.md from the settings model, so the reference cannot drift.

    uv run python scripts/gen_config_docs.py          # rewrite docs/configuration.md
    uv run python scripts/gen_config_docs.py --check  # exit 1 if the file is out of date

Every field of ``conveyor.config.Settings`` becomes a row (environment name, type, default,
meaning), grouped by the ``# --- Section ---`` comments of config.py, in source order.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from conveyor.config import Settings

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "configuration.md"
_SECTION = re.compile(r"^\s*# --- (.+?) -+\s*$")
_FIELD = re.compile(r"^    (\w+)\s*:")

HEADER = """\
# Configuration reference

<!-- Generated from conveyor.config.Settings by `uv run python scripts/gen_config_docs.py`.
     Do not edit by hand: tests/unit/test_config_docs.py fails when this file and the code
     disagree. -->

Every Conveyor service and command reads its settings from environment variables named
`CONVEYOR_<SETTING>`, once, at start-up; command-line options, where a command has them,
override the environment. A bad value stops the service with one line naming the variable,
e.g. `conveyor: error: invalid settings: CONVEYOR_CONCURRENCY: Input should be greater than or
equal to 1`.

- Lists are comma-separated: `CONVEYOR_TASKS=myapp.tasks,otherapp.tasks`.
- Booleans: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
- Durations are in the unit their name ends with: `_s` seconds, `_ms` milliseconds.
- An optional setting is unset when its variable is absent.

In Docker Compose, `compose.yaml` sets these per service; `conveyor up` passes its own (the Redis
URL, the ports) to the processes it starts and everything else through from its environment.
"""


def sections() -> list[tuple[str, list[str]]]:
    """Field names grouped by the section comments of the Settings class, in source order."""
    groups: list[tuple[str, list[str]]] = []
    current = "General"
    for line in inspect.getsource(Settings).splitlines():
        if header := _SECTION.match(line):
            current = header.group(1).strip()
            continue
        field = _FIELD.match(line)
        if field and field.group(1) in Settings.model_fields:
            if not groups or groups[-1][0] != current:
                groups.append((current, []))
            groups[-1][1].append(field.group(1))
    listed = {name for _, names in groups for name in names}
    missing = [name for name in Settings.model_fields if name not in listed]
    if missing:
        groups.append(("Other", missing))
    return groups


def _is_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        what = "secrets" if item is SecretStr else "strings"
        return f"list of {what} (comma-separated)"
    if origin is dict:
        return "list of `name[:weight]` (comma-separated)"
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
             SecretStr: "secret"}  # fmt: skip
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _number(value: Any) -> str:
    """``604800.0`` -> ``604800``: the form an environment variable takes."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _bounds(info: FieldInfo) -> list[str]:
    words = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {_number(item.ge)}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {_number(item.gt)}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {_number(item.le)}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {_number(item.lt)}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            words.append("not empty")
        elif isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length} characters")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {item.max_length} characters")
    return words


def type_text(info: FieldInfo) -> str:
    annotation, optional = _is_optional(info.annotation)
    parts = [_type_name(annotation), *_bounds(info)]
    if optional:
        parts.append("optional")
    return ", ".join(parts)


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, list | dict):
        return f"`{','.join(str(v) for v in value)}`" if value else "empty"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    text = str(value)
    return f"`{text}`" if text else "empty"


def _cell(text: str) -> str:
    """One table cell: one line, ``|`` escaped, and ``<x>`` kept visible outside code spans."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def render() -> str:
    """The whole of docs/configuration.md."""
    out = [HEADER]
    for title, names in sections():
        out.append(f"\n## {title}\n")
        out.append("| Variable | Type | Default | Meaning |")
        out.append("| --- | --- | --- | --- |")
        for name in names:
            info = Settings.model_fields[name]
            out.append(
                f"| `CONVEYOR_{name.upper()}` | {_cell(type_text(info))} | "
                f"{_cell(default_text(info))} | {_cell(info.description or '')} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Fail if the file is out of date.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(REPO)} is out of date: run scripts/gen_config_docs.py",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(REPO)} ({len(Settings.model_fields)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
