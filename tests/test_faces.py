"""Each package's face: `__all__` names its public surface, every name resolves to the object in the module
that defines it, and the faces import lazily, so `prewarm --help` loads none of the heavy libraries."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

FACES = ["prewarm.admin", "prewarm.backends", "prewarm.emulator", "prewarm.forecast", "prewarm.prewarmer",
         "prewarm.proxy", "prewarm.sim", "prewarm.sim.policies", "prewarm.store"]


@pytest.mark.parametrize("name", FACES)
def test_every_public_name_resolves(name: str) -> None:
    face = importlib.import_module(name)
    exports = getattr(face, "_EXPORTS", {})
    assert set(exports) <= set(face.__all__) and len(set(face.__all__)) == len(face.__all__)
    for public in face.__all__:
        value = getattr(face, public)
        if public in exports:  # the object itself, not a submodule of the same name
            assert value is getattr(importlib.import_module(exports[public]), public), public
    for module in set(exports.values()):  # importing every submodule rebinds no public name
        importlib.import_module(module)
    for public, module in exports.items():
        assert getattr(face, public) is getattr(importlib.import_module(module), public), public


@pytest.mark.parametrize("name", FACES)
def test_a_submodule_imported_first_shadows_no_public_name(name: str) -> None:
    """Importing `pkg.sub` binds `pkg.sub` to the module before the face's `__getattr__` ever runs, so a public
    name that is also a submodule's name would resolve to the module. Checked in a fresh interpreter, where
    nothing has been resolved yet."""
    code = (f"import importlib, {name} as face; mods = sorted(set(getattr(face, '_EXPORTS', {{}}).values())); "
            "[importlib.import_module(m) for m in mods]; "
            "print([p for p, m in getattr(face, '_EXPORTS', {}).items() "
            "if getattr(face, p) is not getattr(importlib.import_module(m), p)])")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_an_unknown_name_is_an_attribute_error() -> None:
    import prewarm.sim

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        prewarm.sim.nope  # noqa: B018


def test_the_cli_and_the_replay_import_what_they_need_only() -> None:
    code = ("import sys, prewarm.cli; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('statsmodels', 'sklearn', 'matplotlib', 'pandas', 'aiohttp') or m.startswith('prewarm.sim.run')]; "
            "import prewarm.sim.run; "
            "served = [m for m in sys.modules if m.startswith(('prewarm.proxy', 'prewarm.prewarmer', 'prewarm.admin'))]; "
            "print(heavy, served)")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []", out


def test_the_proxy_imports_none_of_the_parts_that_decide() -> None:
    """DESIGN.md: the proxy knows only ProxyHooks and Store.put; the prewarmer, the planner, the forecaster and
    the admin routes are handed to it, never imported by it."""
    code = ("import sys, prewarm.proxy.app, prewarm.proxy.connections, prewarm.proxy.lag; "
            "print([m for m in sys.modules if m.startswith(('prewarm.prewarmer', 'prewarm.planner', "
            "'prewarm.forecast', 'prewarm.admin'))])")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
