"""The public API is explicit: conveyor.__all__ is sorted and every name resolves."""

from __future__ import annotations

import conveyor


def test_all_is_sorted_and_complete() -> None:
    assert conveyor.__all__ == sorted(conveyor.__all__)
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None, name


def test_everything_public_is_listed() -> None:
    public = {
        name
        for name, value in vars(conveyor).items()
        if not name.startswith("_") and not isinstance(value, type(conveyor))
    }
    assert public == set(conveyor.__all__) - {"__version__"}
