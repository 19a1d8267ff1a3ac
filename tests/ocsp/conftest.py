"""Fixtures for the OCSP tests: CA chains per key type (as the PKI tests build them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from iotsec.pki.keys import KeyType
from tests.cli.support import Cli, use_home
from tests.pki.support import Chain, build_chain

#: When the cached chains are made, and the time the pure tests sign at: one moment, taken
#: when the suite is collected, so that a long suite never signs before its CA existed.
CHAIN_TIME = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def chain_for() -> Callable[[KeyType], Chain]:
    """The (cached) root + issuing chain of a key type, made at :data:`CHAIN_TIME`."""
    cache: dict[KeyType, Chain] = {}

    def get(key_type: KeyType) -> Chain:
        if key_type not in cache:
            cache[key_type] = build_chain(key_type, CHAIN_TIME)
        return cache[key_type]

    return get


@pytest.fixture
def anon(rt: Runtime) -> Iterator[TestClient]:
    """The API without credentials (as tests/api's ``anon``): /ocsp is public."""
    with TestClient(create_app(rt)) as client:
        yield client


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home that does not exist yet, selected through IOTSEC_HOME (as tests/cli's)."""
    return use_home(monkeypatch, tmp_path / "home", initialise=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], cli_home: Path) -> Cli:
    return Cli(capsys)


@pytest.fixture
def ready(cli: Cli) -> dict[str, Any]:
    """An initialised home; returns ``init --json``."""
    data: dict[str, Any] = cli.json("init", "--store-passphrase")
    return data
