"""Broker test fixtures: an iotsec home on SQLite with the real clock (Mosquitto checks
certificates against the real time), a short broker directory, and a port."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from tests.broker.support import short_broker_dir
from tests.ports import free_port
from tests.services import require_tool


@pytest.fixture(scope="session")
def mosquitto() -> str:
    return require_tool("mosquitto", "Debian package 'mosquitto'")


@pytest.fixture
def brt(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(home=tmp_path / "home")
    # Made a week ago: a test may issue "as if days ago" (an expired certificate), and
    # nothing is signed before its CA existed.
    init_home(settings, now=datetime.now(UTC) - timedelta(days=7), store_passphrase=True)
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    with short_broker_dir("broker") as path:
        yield path


@pytest.fixture
def port() -> int:
    return free_port()
