"""The PostgreSQL triggers that keep each device's link names (migration 0028) update the
devices a statement touched by their key, whatever the planner believes of the table.

0028's statement triggers updated the touched devices with one ``UPDATE`` joining the
statement's transition table to ``devices``. PL/pgSQL plans a statement once per connection
and keeps the plan until the tables' statistics change. Planned while ``devices`` was small
(a new home enrolling its first devices), the join is a hash join over a sequential scan of
every device, and it stays so for as long as the connection lives while the fleet grows
(until an ``ANALYZE``, which autovacuum may run late or not at all): every enrolment that
registered a device read the whole table twice, once per link table.

Now a statement that touched at most 100 devices updates each one by its primary key, a
plan that cannot become a scan; a larger one (a cascade, a plain-SQL bulk change) keeps the
set-wise ``UPDATE`` as 0028 wrote it, planned by the planner as before (such changes are
rare and large; none of them is on a path that runs per enrolment). The names written are
the same.
SQLite's triggers are per row and look the device up by its key already: nothing changes
there.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07
"""

import importlib

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_0028 = importlib.import_module("iotsec.store.migrations.versions.0028_device_link_names")

#: Above this many devices touched by one statement, the set-wise update.
_BY_KEY = 100

#: The devices a statement touched, by trigger operation.
_TOUCHED = {
    "INSERT": "SELECT DISTINCT device_id FROM new_links",
    "DELETE": "SELECT DISTINCT device_id FROM old_links",
    "UPDATE": "SELECT device_id FROM old_links UNION SELECT device_id FROM new_links",
}


def _pg_function(table: str, name: str, column: str) -> str:
    """The trigger's body: each touched device's names computed again from the links and
    written where they differ."""

    def refresh(touched: str) -> str:
        names = _0028._pg_names(table, name, "u.device_id")
        return f"""
            SELECT count(*) INTO n FROM ({touched}) u;
            IF n <= {_BY_KEY} THEN
              FOR r IN {touched} LOOP
                held := {_0028._pg_names(table, name, "r.device_id")};
                UPDATE devices SET {column} = held
                  WHERE id = r.device_id AND {column} IS DISTINCT FROM held;
              END LOOP;
            ELSE
              UPDATE devices d SET {column} = t.names
                FROM (SELECT u.device_id, {names} AS names FROM ({touched}) u) t
                WHERE d.id = t.device_id AND d.{column} IS DISTINCT FROM t.names;
            END IF;"""  # noqa: S608

    return f"""
        DECLARE n bigint; r record; held text;
        BEGIN
          IF current_setting('{_0028.WRITTEN}', true) = 'on' THEN
            RETURN NULL;  -- the writer wrote the names with the rows (store.bulk.names_written)
          END IF;
          IF TG_OP = 'INSERT' THEN
            {refresh(_TOUCHED["INSERT"])}
          ELSIF TG_OP = 'DELETE' THEN
            {refresh(_TOUCHED["DELETE"])}
          ELSIF TG_OP = 'UPDATE' THEN
            {refresh(_TOUCHED["UPDATE"])}
          ELSE
            UPDATE devices SET {column} = '' WHERE {column} <> '';
          END IF;
          RETURN NULL;
        END"""  # noqa: S608


def _replace(body: str, table: str) -> None:
    # Every statement is made of this module's and 0028's constant names: no input reaches it.
    op.execute(f"CREATE OR REPLACE FUNCTION iotsec_{table}_names() RETURNS trigger "
               f"LANGUAGE plpgsql AS $body${body}$body$")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, column in _0028._LINKS:
        _replace(_pg_function(table, name, column), table)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name, column in _0028._LINKS:
        _replace(_0028._pg_function(table, name, column), table)
