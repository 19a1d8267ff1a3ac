"""``iotsec migrate --to URL``: move a home's embedded SQLite store to PostgreSQL.

The target must be an empty database (no tables, or iotsec's tables without rows); it gets
the schema from the shipped migrations. While the copy runs, the SQLite store is held with
its write lock, so no change can slip in between the copy and the switch. Every table is
copied in batches in one PostgreSQL transaction and checked there (row count and the
SHA-256 of its rows, the same digest a backup uses), and so is each CA's current CRL, byte
for byte; only then is the transaction committed, the CRL served through the new store
compared once more, and the URL recorded in the home (``database.json``, see
:mod:`iotsec.app.store_location`). Last, the SQLite store is made read-only with triggers
(kept as it was, for the record): a process still running on it fails instead of writing
changes that would be lost. A refused or failed migration leaves the home as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, func, select

from iotsec.app.events import Event
from iotsec.app.pki.crl import PublishedCrl, current_crl
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.store_location import check_postgresql_url, display_url, remember_database
from iotsec.config import Settings
from iotsec.errors import MigrationError, MigrationTargetError
from iotsec.store import models as m
from iotsec.store.backup_format import RowDigest, encode_row
from iotsec.store.db import make_engine, reading, transaction
from iotsec.store.migrate import upgrade_in
from iotsec.store.snapshot import (
    TABLES,
    clear_seeded_rows,
    insert_rows,
    non_empty_target,
    read_batches,
    reset_sequences,
    table_digest,
)

__all__ = ["MigrationResult", "Progress", "migrate_home"]

#: ``progress(table, rows copied so far, rows in the table)``.
Progress = Callable[[str, int, int], None]
_ROLES: Final = ("root", "issuing")
_MOVED: Final = "this iotsec store was moved to PostgreSQL (see database.json in the home)"


@dataclass(frozen=True)
class MigrationResult:
    target: str
    tables: dict[str, int]
    crls: dict[str, int]
    sqlite_file: str


def _refuse_non_empty(conn: Connection, url: str) -> None:
    why = non_empty_target(conn)
    if why is not None:
        raise MigrationTargetError(f"the database {display_url(url)} is not empty: {why}",
                                   hint="migrate into a new, empty database; nothing was "
                                   "changed")


def _copy(src: Connection, dst: Connection, progress: Progress | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in TABLES:
        total = src.execute(select(func.count()).select_from(table)).scalar_one()
        copied = RowDigest()
        for batch in read_batches(src, table):
            insert_rows(dst, table, batch)
            for row in batch:
                copied.add(encode_row(row))
            if progress is not None:
                progress(table.name, copied.rows, total)
        landed = table_digest(dst, table)
        if (landed.rows, landed.hexdigest()) != (copied.rows, copied.hexdigest()) \
                or copied.rows != total:
            raise MigrationError(f"the table {table.name!r} differs after the copy "
                                 f"({copied.rows} rows read, {landed.rows} written)",
                                 hint="nothing was changed; report this with the database "
                                 "versions")
        counts[table.name] = total
    reset_sequences(dst)
    return counts


def _stored_crls(conn: Connection) -> dict[int, bytes | None]:
    return {row.authority_id: row.der for row in conn.execute(
        select(m.crls.c.authority_id, m.crls.c.der))}


def _freeze(src: Connection) -> None:
    """Make the SQLite store read-only: every write to any table fails with a message that
    says where the store went."""
    for table in [*(t.name for t in TABLES), "alembic_version"]:
        for op in ("INSERT", "UPDATE", "DELETE"):
            src.exec_driver_sql(
                f'CREATE TRIGGER "iotsec_moved_{table}_{op.lower()}" BEFORE {op} ON "{table}" '
                f"BEGIN SELECT RAISE(ABORT, '{_MOVED}'); END")


def migrate_home(settings: Settings, url: str, *, progress: Progress | None = None
                 ) -> MigrationResult:
    """Move the home's SQLite store to the empty PostgreSQL database at ``url``."""
    check_postgresql_url(url)
    rt = open_runtime(settings)
    try:
        if rt.engine.dialect.name != "sqlite":
            where = display_url(rt.engine.url.render_as_string(hide_password=False))
            raise MigrationError(f"the home's store is already in {where}",
                                 hint="migrate moves a home's embedded SQLite store, and this "
                                 "home's store was moved already (IOTSEC_DATABASE_URL, or "
                                 "database.json in the home)")
        return _migrate(rt, url, progress)
    finally:
        rt.close()


def _migrate(rt: Runtime, url: str, progress: Progress | None) -> MigrationResult:
    target = make_engine(url)
    try:
        with reading(target) as conn:
            _refuse_non_empty(conn, url)
        # Bring each CA's CRL up to date first (this may sign one): the copy must carry the
        # CRL the new store will serve, byte for byte.
        published = {role: current_crl(rt, role=role) for role in _ROLES}
        rt.events.flush()  # a signature's key.use event, before the store is moved
        sqlite_file = str(rt.engine.url.database)
        with transaction(rt.engine) as src:  # BEGIN IMMEDIATE: writers wait until the end
            cached = _stored_crls(src)
            served = sorted(p.der for p in published.values())
            if sorted(d for d in cached.values() if d is not None) != served:
                raise MigrationError("the store changed while the migration started",
                                     hint="stop every other iotsec process on this home and "
                                     "run the migration again")
            with transaction(target) as dst:
                _refuse_non_empty(dst, url)
                upgrade_in(dst)
                clear_seeded_rows(dst)
                counts = _copy(src, dst, progress)
                if _stored_crls(dst) != cached:
                    raise MigrationError("the CRLs differ after the copy",
                                         hint="nothing was changed")
            _check_served(rt.settings, url, published)
            remember_database(rt.settings, url)
            _freeze(src)
        return MigrationResult(target=display_url(url), tables=counts,
                               crls={role: p.number for role, p in published.items()},
                               sqlite_file=sqlite_file)
    finally:
        target.dispose()


def _check_served(settings: Settings, url: str, published: dict[str, PublishedCrl]) -> None:
    """The new store serves the very CRLs the old one did."""
    moved = open_runtime(Settings.model_validate(
        {**settings.model_dump(exclude_unset=True), "database_url": url}))
    try:
        for role, before in published.items():
            after = current_crl(moved, role=role)
            if after.der != before.der:
                raise MigrationError(
                    f"the {role} CRL served from {display_url(url)} differs from the one the "
                    "SQLite store served", hint="the home still uses its SQLite store; empty "
                    "the target database before trying again")
        moved.events.record(Event(at=moved.now(), kind="store.migrate", outcome="ok",
                                  subject=display_url(url), detail={"from": "sqlite"}))
    finally:
        moved.close()
