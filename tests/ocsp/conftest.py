"""Fixtures for the OCSP tests: CA chains per key type (as the PKI tests build them)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

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
