"""Fixtures for the console tests over the ``rt`` runtime (SQLite and PostgreSQL): a client
of the whole API application on an https:// base URL, as the console requires."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult

ORIGIN = "https://testserver"


@pytest.fixture
def admin_token(initialised: InitResult) -> str:
    assert initialised.admin_token is not None
    return initialised.admin_token


@pytest.fixture
def web(rt: Runtime) -> Iterator[TestClient]:
    """A browser-like client: https, follows no redirects, sends its Origin on POST."""
    with TestClient(create_app(rt), base_url=ORIGIN, follow_redirects=False) as client:
        yield client
