"""Package faces that import on first use (PEP 562), so `prewarm --help` does not load statsmodels.

Each package's `__init__` names its public surface (`__all__`) and where each name
lives; `from prewarm.sim import run_replays` imports `prewarm.sim.run` then, not
before. The same names are imported under TYPE_CHECKING in each `__init__` so mypy
checks every use; tests/test_faces.py keeps the two lists and the modules in step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_face(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: each name of `exports` (name -> module) on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
