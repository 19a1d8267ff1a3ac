"""Fixtures for the security regression tests: the REST API tests' clients (``token``,
``api``, ``anon``), and ``raw``, a client that answers a server error with its 500 instead
of raising it, so that a test can assert there is none."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import configuration

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from tests.api.conftest import anon, api, token

__all__ = ["anon", "api", "hypothesis_home", "raw", "token"]


@pytest.fixture
def raw(rt: Runtime, token: str) -> Iterator[TestClient]:
    """The admin client, with server errors as responses; the failure throttle lifted (a
    test here makes many refused calls, and tests/security checks the throttle itself)."""
    rt.settings.auth_failure_limit = 1_000_000
    with TestClient(create_app(rt), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[Path]:
    """Hypothesis keeps whatever it writes (examples, caches) under the test's directory."""
    home = tmp_path / "hypothesis"
    saved = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(home)
    yield home
    configuration.set_hypothesis_home_dir(saved)
