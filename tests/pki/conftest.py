"""CA chains for the PKI tests, built once per key type and reused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from iotsec.pki.keys import KeyType
from tests.pki.support import Chain, build_chain


@pytest.fixture(scope="session")
def chain_for() -> Callable[[KeyType], Chain]:
    """Return the (cached) root + issuing chain of a key type, created at the current time."""
    cache: dict[KeyType, Chain] = {}

    def get(key_type: KeyType) -> Chain:
        if key_type not in cache:
            cache[key_type] = build_chain(key_type, datetime.now(UTC))
        return cache[key_type]

    return get


@pytest.fixture(scope="session")
def p256_chain(chain_for: Callable[[KeyType], Chain]) -> Chain:
    return chain_for(KeyType.ECDSA_P256)
