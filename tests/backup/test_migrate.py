"""``iotsec migrate``: a SQLite home moved to PostgreSQL keeps every row and serves the same
CRL byte for byte; a refused migration changes nothing, on either side."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from iotsec.app.identity import devices
from iotsec.app.migration import migrate_home
from iotsec.app.pki.crl import current_crl
from iotsec.app.runtime import open_runtime
from iotsec.app.setup import init_home
from iotsec.app.store_location import DATABASE_FILE
from iotsec.config import Settings
from iotsec.errors import ConflictError, MigrationError, MigrationTargetError
from iotsec.store.db import make_engine, transaction
from tests.backup.conftest import populate, store_rows
from tests.conftest import FakeClock


@pytest.fixture
def sqlite_home(tmp_path: Path, clock: FakeClock) -> Settings:
    settings = Settings(home=tmp_path / "home")
    init_home(settings, now=clock(), store_passphrase=True)
    rt = open_runtime(settings, clock=clock)
    try:
        populate(rt)
    finally:
        rt.close()
    return settings


def test_migrate_moves_every_row_and_the_same_crl(
        sqlite_home: Settings, pg_schema: Callable[[], str], clock: FakeClock) -> None:
    url = pg_schema()
    rt = open_runtime(sqlite_home, clock=clock)
    crls = {role: current_crl(rt, role=role).der for role in ("issuing", "root")}
    rt.close()
    before = store_rows(sqlite_home.store_url)
    seen: list[tuple[str, int, int]] = []

    result = migrate_home(sqlite_home, url, progress=lambda *p: seen.append(p))
    assert result.tables == {name: len(rows) for name, rows in before.items()}
    assert {t for t, _, _ in seen} == {t for t, rows in before.items() if rows}
    after = store_rows(url)
    for name, rows in before.items():
        if name == "events":  # the migration is recorded in the new store
            assert after[name][:len(rows)] == rows
            assert after[name][-1][2] == "store.migrate"
        else:
            assert after[name] == rows, name

    # Every later command finds the new store through the home, and serves the same CRLs.
    assert (sqlite_home.resolved_home / DATABASE_FILE).stat().st_mode & 0o777 == 0o600
    moved = open_runtime(Settings(home=sqlite_home.home), clock=clock)
    try:
        assert moved.engine.dialect.name == "postgresql"
        assert {role: current_crl(moved, role=role).der for role in crls} == crls
        devices.add_device(moved, devices.NewDevice.parse("dev-after"))  # ids keep going
    finally:
        moved.close()
    # The SQLite file stays as it was, and refuses every write.
    assert store_rows(sqlite_home.store_url) == before
    with sqlite3.connect(sqlite_home.resolved_home / "iotsec.db") as db, \
            pytest.raises(sqlite3.IntegrityError, match="moved to PostgreSQL"):
        db.execute("INSERT INTO groups (name, created_at) VALUES ('x', 1)")
    with pytest.raises(MigrationError, match="already"):
        migrate_home(Settings(home=sqlite_home.home), pg_schema())


def test_a_refused_migration_changes_nothing(
        sqlite_home: Settings, pg_schema: Callable[[], str], tmp_path: Path,
        clock: FakeClock) -> None:
    url = pg_schema()
    init_home(Settings(home=tmp_path / "other", database_url=url), now=clock(),
              store_passphrase=True)
    target_before = store_rows(url)
    before = store_rows(sqlite_home.store_url)
    db_bytes = (sqlite_home.resolved_home / "iotsec.db").read_bytes()

    with pytest.raises(MigrationTargetError, match="is not empty: its table"):
        migrate_home(sqlite_home, url)
    assert store_rows(url) == target_before
    assert store_rows(sqlite_home.store_url) == before
    assert (sqlite_home.resolved_home / "iotsec.db").read_bytes() == db_bytes
    assert not (sqlite_home.resolved_home / DATABASE_FILE).exists()
    engine = make_engine(sqlite_home.store_url)
    with transaction(engine) as conn:  # still writable: nothing froze it
        conn.exec_driver_sql("INSERT INTO groups (name, created_at) VALUES ('x', 1)")
    engine.dispose()


def test_a_target_with_other_tables_is_refused(
        sqlite_home: Settings, pg_schema: Callable[[], str]) -> None:
    url = pg_schema()
    engine = make_engine(url)
    with transaction(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE invoices (id integer)")
    engine.dispose()
    with pytest.raises(ConflictError, match="tables that are not iotsec's \\(invoices\\)"):
        migrate_home(sqlite_home, url)


def test_only_a_postgresql_url_is_taken(sqlite_home: Settings) -> None:
    from iotsec.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not a PostgreSQL URL"):
        migrate_home(sqlite_home, "sqlite:////tmp/elsewhere.db")
