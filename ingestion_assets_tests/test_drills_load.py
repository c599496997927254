"""The drills take minutes and run in `make drills`, not here; but each one must at least load,
so that a renamed helper breaks `make test`, not a drill run a week later."""

from __future__ import annotations

import importlib

import pytest

from .drills import DRILLS


@pytest.mark.parametrize(("name", "module"), [(d[0], d[1]) for d in DRILLS])
def test_every_drill_loads_and_describes_itself(name: str, module: str) -> None:
    drill = importlib.import_module(module)
    assert callable(drill.run), name
    result = drill.new_result()
    assert result.drill and result.done and result.expected, name


def test_every_drill_has_a_name_of_its_own() -> None:
    names = [d[0] for d in DRILLS]
    assert len(names) == len(set(names))
