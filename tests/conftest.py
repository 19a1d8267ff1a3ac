"""Shared fixtures: a fresh iotsec home per test, on SQLite and on PostgreSQL.

PostgreSQL runs use ``IOTSEC_TEST_DATABASE_URL`` (default: the local server's ``test``
database), each test in a schema of its own that is dropped afterwards. Off CI, a missing
server skips those runs with the reason; under CI (``CI=true``) it fails them.

Key files written in this process use a cheap scrypt cost (:data:`TEST_SCRYPT_COST`): the
production cost is about 90 ms per key written or loaded, and the suite writes and loads
thousands. Readers take the cost from the file, so nothing else changes; the tests that are
about the cost itself (tests/custody/test_pkcs8.py) ask for ``production_scrypt_cost``.
Subprocesses (``iotsec`` started as a command) always use the production cost.

Typer builds the click command tree of an app on every call (about 70 ms for iotsec's),
which a process running one command pays once and this suite paid on each of thousands
of in-process CLI runs: here the tree built for an app is reused until the app's
registered commands, groups or callback change.
"""

from __future__ import annotations

import os
import secrets
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
import typer
import typer.main
import typer.testing
from sqlalchemy import create_engine, text

from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import InitResult, init_home
from iotsec.config import Settings
from iotsec.pki import pkcs8
from tests.services import require_tool, unavailable

PG_URL = os.environ.get("IOTSEC_TEST_DATABASE_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: Still a real scrypt (and a real PBES2 file OpenSSL reads), in 16 KiB instead of 16 MiB.
TEST_SCRYPT_COST = pkcs8.ScryptCost(n=2**4, r=8, p=1)


#: Tests that run for minutes (whole documents executed as pasted), started first so that
#: with several workers (``pytest -n``) they overlap the rest instead of trailing it.
LONG_FIRST = ("tests/docs/test_readme.py::test_readme_shell_blocks_run_in_order",
              "tests/docs/test_docs.py::test_guide_shell_blocks_run_in_order")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))


@pytest.fixture(autouse=True, scope="session")
def _cheap_scrypt_cost() -> Iterator[None]:
    saved = pkcs8.SCRYPT_COST
    pkcs8.SCRYPT_COST = TEST_SCRYPT_COST
    yield
    pkcs8.SCRYPT_COST = saved


def _typer_shape(app: typer.Typer) -> tuple[object, ...]:
    """What Typer builds a click command from; registering anything changes it."""
    return (app.registered_callback, app.info.callback, tuple(app.registered_commands),
            tuple((group, None if group.typer_instance is None
                   else _typer_shape(group.typer_instance))
                  for group in app.registered_groups))


@pytest.fixture(autouse=True, scope="session")
def _reuse_typer_commands() -> Iterator[None]:
    build = typer.main.get_command
    built: weakref.WeakKeyDictionary[typer.Typer, tuple[tuple[object, ...], click.Command]]
    built = weakref.WeakKeyDictionary()

    def get_command(app: typer.Typer) -> click.Command:
        shape = _typer_shape(app)
        known = built.get(app)
        if known is not None and known[0] == shape:
            return known[1]
        command = build(app)
        built[app] = (shape, command)
        return command

    patch = pytest.MonkeyPatch()
    patch.setattr(typer.main, "get_command", get_command)
    # A private name of typer.testing: if a release renames it, only the speed-up is lost.
    patch.setattr(typer.testing, "_get_command", get_command, raising=False)
    yield
    patch.undo()


@pytest.fixture
def production_scrypt_cost(monkeypatch: pytest.MonkeyPatch) -> pkcs8.ScryptCost:
    """Key files written during the test use the production scrypt cost."""
    monkeypatch.setattr(pkcs8, "SCRYPT_COST", pkcs8.DEFAULT_SCRYPT_COST)
    return pkcs8.DEFAULT_SCRYPT_COST


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
        unavailable(f"PostgreSQL is not reachable at {PG_URL}: {type(exc).__name__}: {exc}")


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
    return init_home(settings, now=clock(), store_passphrase=True)


@pytest.fixture
def rt(settings: Settings, initialised: InitResult, clock: FakeClock) -> Iterator[Runtime]:
    runtime = open_runtime(settings, clock=clock)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def openssl() -> str:
    return require_tool("openssl", "Debian package 'openssl'")
