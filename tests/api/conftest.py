"""Fixtures for the REST API tests: an app over the ``rt`` runtime (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult


@pytest.fixture
def token(initialised: InitResult) -> str:
    assert initialised.admin_token is not None
    return initialised.admin_token


@pytest.fixture
def anon(rt: Runtime) -> Iterator[TestClient]:
    """A client without credentials (the failure throttle is lifted so that a test may
    make many refused calls; tests/api/test_scopes.py checks the throttle itself)."""
    rt.settings.auth_failure_limit = 1_000_000
    with TestClient(create_app(rt)) as client:
        yield client


@pytest.fixture
def api(rt: Runtime, token: str) -> Iterator[TestClient]:
    """A client that sends the admin token."""
    with TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client
