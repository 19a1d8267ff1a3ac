"""Every module says what it offers: ``__all__`` names its public API (what other packages
may import), and every name listed exists."""

from __future__ import annotations

import importlib
import pkgutil

import iotsec


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(iotsec.__path__, "iotsec.")
                  if ".migrations" not in m.name)


def test_every_module_declares_its_public_names() -> None:
    missing = []
    for name in _modules():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            # A package whose __init__ is only its docstring has nothing to declare.
            is_package = hasattr(module, "__path__")
            own = [n for n, v in vars(module).items() if not n.startswith("_")
                   and getattr(v, "__module__", name) == name and not isinstance(v, type(iotsec))]
            if not (is_package and not own):
                missing.append(name)
            continue
        absent = [n for n in exported if not hasattr(module, n)]
        assert absent == [], (name, absent)
    assert missing == []
