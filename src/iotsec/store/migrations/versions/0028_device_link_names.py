"""Each device's group names and own role names on its ``devices`` row (``group_names``,
``role_names``: sorted byte by byte, space-separated, ``''`` for none), so that a
decision's registry entry is the device's row alone (ADR 0041).

The links (``device_groups``, ``device_roles``) stay the source of truth; the database
itself keeps the two columns equal to them, whatever writes the links: after each statement
that inserts, deletes or updates links (a cascade from a deleted device or group
included), the names of every device it touched are computed again from the links and
written where they differ. On PostgreSQL the triggers are per statement, over the
statement's transition tables (a bulk ``COPY`` pays one trigger per statement, not per
row), and enabled ``ALWAYS``: they also fire under ``session_replication_role = replica``,
which the bulk import sets to skip the foreign keys' per-row checks (ADR 0037). On SQLite
they are per row.

A writer that writes the names with the device rows it inserts, equal to the links it then
inserts for them (the bulk import), may say so for its transaction
(``store.bulk.names_written``): the triggers then skip its statements instead of looking
each device up again.

A device's row updated by these triggers is announced by the change feed's trigger on
``devices`` (migration 0023), so serving processes read its entry again.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

#: The setting a writer that writes the names with the device rows it inserts sets, for
#: its transaction, around its link inserts (the bulk import: ``store.bulk.names_written``).
WRITTEN = "iotsec.device_names_written"
#: (links table, name column, devices column).
_LINKS = (("device_groups", "group_name", "group_names"),
          ("device_roles", "role_name", "role_names"))


def _pg_names(table: str, name: str, device: str) -> str:
    """The names ``device`` has in ``table``, as the column holds them."""
    return (f"coalesce((SELECT string_agg(l.{name}, ' ' ORDER BY l.{name} COLLATE \"C\") "  # noqa: S608
            f"FROM {table} l WHERE l.device_id = {device}), '')")


def _pg_function(table: str, name: str, column: str) -> str:
    """The statement trigger's body: the devices its statement touched get their names
    computed again (written only where they differ: an import that wrote them with the
    device rows changes nothing)."""

    def refresh(touched: str) -> str:
        names = _pg_names(table, name, "u.device_id")
        return (f"UPDATE devices d SET {column} = t.names "  # noqa: S608
                f"FROM (SELECT u.device_id, {names} AS names FROM ({touched}) u) t "
                f"WHERE d.id = t.device_id AND d.{column} IS DISTINCT FROM t.names;")

    return f"""
        BEGIN
          IF current_setting('{WRITTEN}', true) = 'on' THEN
            RETURN NULL;  -- the writer wrote the names with the rows (store.bulk.names_written)
          END IF;
          IF TG_OP = 'INSERT' THEN
            {refresh("SELECT DISTINCT device_id FROM new_links")}
          ELSIF TG_OP = 'DELETE' THEN
            {refresh("SELECT DISTINCT device_id FROM old_links")}
          ELSIF TG_OP = 'UPDATE' THEN
            {refresh("SELECT device_id FROM old_links UNION SELECT device_id FROM new_links")}
          ELSE
            UPDATE devices SET {column} = '' WHERE {column} <> '';
          END IF;
          RETURN NULL;
        END"""  # noqa: S608


def _pg_triggers(table: str) -> dict[str, str]:
    function = f"iotsec_{table}_names()"
    return {
        f"iotsec_{table}_names_inserted":
            f"AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_links "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}",
        f"iotsec_{table}_names_deleted":
            f"AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_links "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}",
        f"iotsec_{table}_names_updated":
            f"AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_links "
            f"NEW TABLE AS new_links FOR EACH STATEMENT EXECUTE FUNCTION {function}",
        f"iotsec_{table}_names_truncated":
            f"AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}",
    }


def _sqlite_names(table: str, name: str, device: str) -> str:
    # The subquery's order (the links' key: device, then name, byte by byte) is the order
    # group_concat sees.
    return (f"coalesce((SELECT group_concat({name}, ' ') FROM (SELECT {name} FROM {table} "  # noqa: S608
            f"WHERE device_id = {device} ORDER BY {name})), '')")


def _sqlite_triggers(table: str, name: str, column: str) -> dict[str, str]:
    def refresh(row: str) -> str:
        names = _sqlite_names(table, name, f"{row}.device_id")
        return (f"UPDATE devices SET {column} = {names} "  # noqa: S608
                f"WHERE id = {row}.device_id AND {column} IS NOT {names};")

    return {
        f"iotsec_{table}_names_inserted": f"AFTER INSERT ON {table} BEGIN "
                                          f"{refresh('NEW')} END",
        f"iotsec_{table}_names_deleted": f"AFTER DELETE ON {table} BEGIN "
                                         f"{refresh('OLD')} END",
        f"iotsec_{table}_names_updated": f"AFTER UPDATE ON {table} BEGIN "
                                         f"{refresh('OLD')} {refresh('NEW')} END",
    }


def _pg_backfill() -> str:
    """Both columns of every device with links, in one statement (one new version of each
    row)."""
    joins, sets = [], []
    for table, name, column in _LINKS:
        joins.append(f"LEFT JOIN (SELECT device_id, string_agg({name}, ' ' ORDER BY {name} "  # noqa: S608
                     f"COLLATE \"C\") AS names FROM {table} GROUP BY device_id) {column} "
                     f"ON {column}.device_id = x.id")
        sets.append(f"{column} = coalesce({column}.names, '')")
    present = " OR ".join(f"{column}.names IS NOT NULL" for *_, column in _LINKS)
    return (f"UPDATE devices d SET {', '.join(sets)} FROM devices x {' '.join(joins)} "  # noqa: S608
            f"WHERE d.id = x.id AND ({present})")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Every statement below is made of this module's constant names: no input reaches it.
    for _table, _name, column in _LINKS:
        op.add_column("devices", sa.Column(column, sa.Text(), nullable=False,
                                           server_default=""))
    if postgres:
        op.execute(_pg_backfill())
    else:
        sets = ", ".join(f"{column} = {_sqlite_names(table, name, 'devices.id')}"
                         for table, name, column in _LINKS)
        op.execute(f"UPDATE devices SET {sets} WHERE id IN (SELECT device_id FROM "  # noqa: S608
                   f"device_groups UNION SELECT device_id FROM device_roles)")
    for table, name, column in _LINKS:
        if postgres:
            op.execute(f"CREATE FUNCTION iotsec_{table}_names() RETURNS trigger "
                       f"LANGUAGE plpgsql AS $body${_pg_function(table, name, column)}$body$")
            for trigger, definition in _pg_triggers(table).items():
                op.execute(f"CREATE TRIGGER {trigger} {definition}")
                op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")
        else:
            for trigger, definition in _sqlite_triggers(table, name, column).items():
                op.execute(f"CREATE TRIGGER {trigger} {definition}")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, name, column in _LINKS:
        if postgres:
            for trigger in _pg_triggers(table):
                op.execute(f"DROP TRIGGER {trigger} ON {table}")
            op.execute(f"DROP FUNCTION iotsec_{table}_names()")
        else:
            for trigger in _sqlite_triggers(table, name, column):
                op.execute(f"DROP TRIGGER {trigger}")
        op.drop_column("devices", column)
