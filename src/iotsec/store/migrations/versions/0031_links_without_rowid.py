"""SQLite: the link tables (``device_groups``, ``device_roles``) are ``WITHOUT ROWID``
tables, stored in the b-tree of their primary key ``(device_id, name)`` alone.

A rowid table keeps each link twice: its row, in rowid order, and its primary key in an
index of its own. Every link an import, an enrolment or a group change writes entered both
b-trees (and the index by name), and every read of a device's links went through the
index, then the table. Keyed by the primary key, each link is one entry of one b-tree (and
one of the index by name): at 1,000,000 devices and 2,500,000 links the store is 18 %
smaller, and an import's links and its commit take a fifth less time (ADR 0049).

Each table is made again under its own definition, as the store holds it, with
``WITHOUT ROWID`` added; the links are copied, and the table's indexes and triggers (the
link names of migration 0028) are made again as they were. Nothing reads a link's rowid.
PostgreSQL has no rowid tables: nothing changes there.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07
"""

import re

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

_TABLES = ("device_groups", "device_roles")
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*$", re.IGNORECASE)


def _rebuild(table: str, *, rowid: bool) -> None:
    """Make ``table`` again with or without its rowid, its rows, indexes and triggers
    kept. Every name here is one of this module's constants; the definitions are the
    store's own, read from ``sqlite_master``."""
    conn = op.get_bind()
    found = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    if found is None:
        raise RuntimeError(f"the store has no table {table}")
    create = str(found).strip()
    has_rowid = _WITHOUT_ROWID.search(create) is None
    if has_rowid == rowid:
        return  # already so
    dependents = [str(sql) for (sql,) in conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY type, name", (table,))]
    head = re.match(rf'CREATE TABLE\s+("{table}"|{table})\s*\(', create, re.IGNORECASE)
    if head is None:
        raise RuntimeError(f"the definition of {table} is not one this migration knows")
    rebuilt = f"iotsec_rebuilt_{table}"
    body = create[head.end():]
    body = _WITHOUT_ROWID.sub(")", body) if rowid else body + " WITHOUT ROWID"
    conn.exec_driver_sql(f"CREATE TABLE {rebuilt} ({body}")
    conn.exec_driver_sql(f"INSERT INTO {rebuilt} SELECT * FROM {table}")  # noqa: S608
    # The table's triggers go with it, before its rows: none of them fires.
    conn.exec_driver_sql(f"DROP TABLE {table}")
    conn.exec_driver_sql(f"ALTER TABLE {rebuilt} RENAME TO {table}")
    for sql in dependents:
        conn.exec_driver_sql(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in _TABLES:
        _rebuild(table, rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in _TABLES:
        _rebuild(table, rowid=True)
