"""The error package loads each domain's module on first use of one of its names: its table
of names must be the domain modules' own, and every name must stay importable from the
package, as when it imported every module up front."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import iotsec.errors
from iotsec.errors import _DOMAINS
from iotsec.errors.base import IotsecError
from iotsec.errors.base import __all__ as base_names


def test_the_table_names_every_domain_module_and_exactly_its_names() -> None:
    package = Path(iotsec.errors.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "base"}
    assert set(_DOMAINS) == modules
    for domain, names in _DOMAINS.items():
        module = importlib.import_module(f"iotsec.errors.{domain}")
        assert names == tuple(sorted(module.__all__)), domain
    every = [name for names in _DOMAINS.values() for name in names] + list(base_names)
    assert len(every) == len(set(every)), "a name exported by two modules"
    assert sorted(iotsec.errors.__all__) == sorted(every)


def test_every_name_is_the_domain_modules_own_class() -> None:
    for domain, names in _DOMAINS.items():
        module = importlib.import_module(f"iotsec.errors.{domain}")
        for name in names:
            found = getattr(iotsec.errors, name)
            assert found is getattr(module, name), name
            assert issubclass(found, IotsecError), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchError"):
        iotsec.errors.NoSuchError  # noqa: B018 - the access is what is tested
    with pytest.raises(ImportError):
        from iotsec.errors import NoSuchError  # noqa: F401


_PROBE = """
import json, sys
import iotsec.errors
loaded = lambda: sorted(m for m in sys.modules if m.startswith("iotsec.errors."))
steps = [loaded()]
from iotsec.errors import ConflictError, StreamHeaderError
steps.append(loaded())
namespace = {}
exec("from iotsec.errors import *", namespace)
steps.append(loaded())
print(json.dumps([steps, sorted(k for k in namespace if not k.startswith("__"))]))
"""


def test_a_domain_module_loads_when_one_of_its_names_is_first_used() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          check=True)
    steps, star = json.loads(done.stdout)
    assert steps[0] == ["iotsec.errors.base"]
    # ConflictError is the root's; StreamHeaderError loads data protection's module alone.
    assert steps[1] == ["iotsec.errors.base", "iotsec.errors.protect"]
    assert steps[2] == sorted(f"iotsec.errors.{d}" for d in [*_DOMAINS, "base"])
    assert star == sorted(iotsec.errors.__all__)
