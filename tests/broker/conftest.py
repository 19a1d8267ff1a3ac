"""Broker test fixtures: an iotsec home on SQLite with the real clock (Mosquitto checks
certificates against the real time), a short broker directory, and a port."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from tests.broker.support import free_port
from tests.services import require_tool


@pytest.fixture(scope="session")
def mosquitto() -> str:
    return require_tool("mosquitto", "Debian package 'mosquitto'")


@pytest.fixture
def brt(tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(home=tmp_path / "home")
    init_home(settings)
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def broker_dir() -> Iterator[Path]:
    # Short (a Unix socket path lives inside) and reachable by the broker's own account.
    path = Path(tempfile.mkdtemp(prefix="iotsec-b-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path / "broker"
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def port() -> int:
    return free_port()
