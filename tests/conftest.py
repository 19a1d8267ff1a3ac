"""Shared fixtures: a fresh iotsec home per test, on SQLite and on PostgreSQL.

PostgreSQL runs use ``IOTSEC_TEST_DATABASE_URL`` (default: the local server's ``test``
database), each test in a schema of its own that is dropped afterwards. Off CI, a missing
server skips those runs with the reason; under CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import InitResult, init_home
from iotsec.config import Settings

PG_URL = os.environ.get("IOTSEC_TEST_DATABASE_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
UNDER_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = (start or datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def _postgres_or_skip() -> None:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        if UNDER_CI:
            pytest.fail(f"PostgreSQL at {PG_URL} is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``None`` (the embedded SQLite default) or a PostgreSQL URL with a private schema."""
    if request.param == "sqlite":
        yield None
        return
    _postgres_or_skip()
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path, database_url: str | None) -> Settings:
    return Settings(home=home, database_url=database_url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def initialised(settings: Settings, clock: FakeClock) -> InitResult:
    return init_home(settings, now=clock())


@pytest.fixture
def rt(settings: Settings, initialised: InitResult, clock: FakeClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, clock=clock)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        if UNDER_CI:
            pytest.fail("the openssl CLI is required under CI")
        pytest.skip("the openssl CLI is not installed")
    return path
