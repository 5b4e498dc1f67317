"""The error tree drawn in conveyor.errors' docstring is the tree the classes form."""

from __future__ import annotations

import inspect
import re

from conveyor import errors


def drawn_tree() -> dict[str, str]:
    """Each class in the docstring's drawing with the class it hangs under."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        found = re.fullmatch(r"\s{4}((?:[│ ]   )*)(?:[├└]── )?(\w+)", line)
        if found is None:
            continue
        depth = len(found.group(1)) // 4 + (1 if "──" in line else 0)
        name = found.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    return parents


def test_the_docstring_draws_every_error_under_its_real_parent() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.ConveyorError)
    }
    real = {
        name: cls.__mro__[1].__name__ for name, cls in classes.items() if name != "ConveyorError"
    }
    assert drawn_tree() == real
