"""Conveyor's own Lua scripts (not BullMQ's, which ship in the ``bullmq`` package), one
``.lua`` file each beside this module, shipped as package data.

Each file starts with a comment saying what the script keeps true and its KEYS and ARGV.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    """The text of ``{name}.lua``, read once on first use (nothing is read at import)."""
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
