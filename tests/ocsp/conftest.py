"""Fixtures for the OCSP tests: CA chains per key type (as the PKI tests build them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from iotsec.pki.keys import KeyType
from tests.pki.support import Chain, build_chain


@pytest.fixture(scope="session")
def chain_for() -> Callable[[KeyType], Chain]:
    """The (cached) root + issuing chain of a key type, created at the current time."""
    cache: dict[KeyType, Chain] = {}

    def get(key_type: KeyType) -> Chain:
        if key_type not in cache:
            cache[key_type] = build_chain(key_type, datetime.now(UTC))
        return cache[key_type]

    return get


@pytest.fixture
def anon(rt: Runtime) -> Iterator[TestClient]:
    """The API without credentials (as tests/api's ``anon``): /ocsp is public."""
    with TestClient(create_app(rt)) as client:
        yield client
