"""What a test does when a real tool or service it needs is missing.

Off CI it is skipped, with the reason. Under CI (``CI=true``) every tool and service the
tests use must be present, so there it fails instead: a runner that lost one cannot pass by
skipping the tests that need it.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

UNDER_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip the running test, or under CI fail it; ``reason`` says what is missing and,
    where it helps, how to install it."""
    if UNDER_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str, install: str = "") -> str:
    """The path of the command ``name`` on PATH; when there is none, :func:`unavailable`
    (``install`` says how to get it, e.g. ``Debian package 'mosquitto'``)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed" + (f" ({install})" if install else ""))
    return path
