"""The store: migrations match the models, transactions are atomic, SQLite is in WAL mode."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select, text

from iotsec.app.identity import devices
from iotsec.app.pki import cert_records, issuance
from iotsec.errors import ConflictError
from iotsec.store import models as m
from iotsec.store.db import driver_transaction, make_engine, transaction
from iotsec.store.migrate import HEAD, head_revision, is_current, upgrade
from iotsec.store.reader import WAL_CHECKPOINT_PAGES, WAL_SIZE_LIMIT, connect_sqlite
from tests.helpers import make_csr


def test_migrations_match_models(rt):
    with rt.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), m.metadata)
    assert diff == []
    assert is_current(rt.engine)
    upgrade(rt.engine)  # idempotent
    assert is_current(rt.engine)


def test_the_schema_check_knows_the_newest_migration(tmp_path):
    assert head_revision() == HEAD
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert not is_current(engine)  # no alembic_version table at all
        upgrade(engine)
        assert is_current(engine)
        with transaction(engine) as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        assert not is_current(engine)
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_every_sqlite_connection_has_the_store_settings(tmp_path):
    """The engine's connections, the driver's units of work and the standard library's
    reader connections all commit durably in WAL mode (synchronous=NORMAL), with foreign
    keys on, and checkpoint the WAL every WAL_CHECKPOINT_PAGES pages (ADR 0042)."""
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)

        def settings(run) -> tuple[object, ...]:
            return tuple(run(f"PRAGMA {name}") for name in (
                "journal_mode", "synchronous", "foreign_keys", "wal_autocheckpoint",
                "journal_size_limit", "busy_timeout"))

        expected = ("wal", 1, 1, WAL_CHECKPOINT_PAGES, WAL_SIZE_LIMIT, 10000)
        with engine.connect() as conn:
            assert settings(lambda q: conn.exec_driver_sql(q).scalar()) == expected
            # Temporary data (sorts, an import's savepoint journals) stays on disk.
            assert conn.exec_driver_sql("PRAGMA temp_store").scalar() == 0
        with driver_transaction(engine) as unit:
            assert settings(lambda q: unit.driver.execute(q).fetchone()[0]) == expected
            # A small unit of work keeps its savepoints' statement journals in memory.
            assert unit.driver.execute("PRAGMA temp_store").fetchone()[0] == 2
        reader = connect_sqlite(path)
        try:
            assert settings(lambda q: reader.execute(q).fetchone()[0]) == expected
        finally:
            reader.close()
    finally:
        engine.dispose()


def test_the_wal_is_checkpointed_and_reused_under_writes(tmp_path):
    """Writes past the checkpoint interval move the WAL's pages into the database file and
    the WAL starts again from its beginning: it stays near the interval's size."""
    path = tmp_path / "x.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with transaction(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE blobs (b BLOB)")
        page = 4096
        for _ in range(3 * WAL_CHECKPOINT_PAGES // 100):
            with transaction(engine) as conn:
                conn.exec_driver_sql("INSERT INTO blobs SELECT randomblob(3000) "
                                     "FROM (SELECT 1 UNION ALL SELECT 2) a, "
                                     "(SELECT 1 UNION ALL SELECT 2) b, "
                                     "(SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 "
                                     "UNION ALL SELECT 4 UNION ALL SELECT 5) c, "
                                     "(SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 "
                                     "UNION ALL SELECT 4 UNION ALL SELECT 5) d")
        wal = path.with_name(path.name + "-wal")
        # About 3 intervals' worth of pages were written; the WAL holds at most one
        # interval's (and the last transaction's) frames.
        assert path.stat().st_size > 2 * WAL_CHECKPOINT_PAGES * page
        assert wal.stat().st_size < 1.1 * (WAL_CHECKPOINT_PAGES + 200) * (page + 24)
    finally:
        engine.dispose()


def test_a_failure_mid_transaction_writes_nothing(rt):
    devices.add_device(rt, devices.NewDevice.parse("d"))
    record = issuance.issue_from_csr(rt, "d", make_csr())
    with pytest.raises(RuntimeError), transaction(rt.engine) as conn:
        conn.execute(m.certificates.update().values(revoked_at=1, revocation_reason=1))
        raise RuntimeError("crash in the middle of a revocation")
    assert cert_records.get_certificate(rt, record.serial).revoked_at is None


def test_a_serial_is_never_reused(rt):
    devices.add_device(rt, devices.NewDevice.parse("d"))
    record = issuance.issue_from_csr(rt, "d", make_csr())
    with transaction(rt.engine) as conn:
        row = conn.execute(select(m.certificates).where(
            m.certificates.c.serial == record.serial)).mappings().one()
    clone = dict(row)
    clone["sha256"] = "0" * 64
    with pytest.raises(ConflictError), transaction(rt.engine) as conn:
        conn.execute(insert(m.certificates).values(clone))
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(m.certificates)).scalar() == 1


def test_backend_is_the_one_configured(rt, database_url):
    if database_url is None:
        assert rt.engine.dialect.name == "sqlite"
        assert str(rt.engine.url).endswith("iotsec.db")
        return
    assert rt.engine.dialect.name == "postgresql"
    with rt.engine.connect() as conn:  # each PostgreSQL test runs in a schema of its own
        assert conn.execute(text("select current_schema()")).scalar().startswith("t_")


def test_sqlite_files_are_private(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'x.db'}")
    with transaction(engine) as conn:
        conn.exec_driver_sql("create table t (x int)")
    engine.dispose()
    assert (tmp_path / "home" / "x.db").stat().st_mode & 0o777 == 0o600
