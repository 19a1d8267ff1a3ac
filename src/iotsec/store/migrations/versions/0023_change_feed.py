"""The change feed (PostgreSQL only): triggers that announce, on the ``iotsec_changes``
channel, every change to what serving processes keep in memory -- a device's state or
registry entry, a certificate's revocation, the policy, an API token, the CAs. A
notification is sent when its transaction commits, and never for one that rolls back.

Payloads are ``<kind>:<id>`` (``device:<id>``, ``cert:<serial>``, ``token:<id>``), or
``<kind>:*`` when a statement changed many rows or the id does not matter (``policy:*``,
``authority:*``). SQLite has one host and no listeners: nothing is created there.

Revision ID: 0023
Revises: 0019
Create Date: 2026-12-06
"""

from alembic import op

revision = "0023"
down_revision = "0019"
branch_labels = None
depends_on = None

# Above 100 rows, one statement announces ``<kind>:*`` instead of each row.
_FUNCTIONS = {
    # Statement-level, with the changed rows as a transition table named "changed".
    "iotsec_notify_devices": """
        DECLARE n bigint; r record;
        BEGIN
          SELECT count(*) INTO n FROM changed;
          IF n > 100 THEN
            PERFORM pg_notify('iotsec_changes', 'device:*');
          ELSE
            FOR r IN SELECT id FROM changed LOOP
              PERFORM pg_notify('iotsec_changes', 'device:' || r.id);
            END LOOP;
          END IF;
          RETURN NULL;
        END""",
    # Statement-level over the old and new rows: only revocations that changed.
    "iotsec_notify_revocations": """
        DECLARE n bigint; r record;
        BEGIN
          SELECT count(*) INTO n FROM old_rows o JOIN new_rows w USING (serial)
            WHERE o.revoked_at IS DISTINCT FROM w.revoked_at;
          IF n > 100 THEN
            PERFORM pg_notify('iotsec_changes', 'cert:*');
          ELSIF n > 0 THEN
            FOR r IN SELECT w.serial FROM old_rows o JOIN new_rows w USING (serial)
                WHERE o.revoked_at IS DISTINCT FROM w.revoked_at LOOP
              PERFORM pg_notify('iotsec_changes', 'cert:' || r.serial);
            END LOOP;
          END IF;
          RETURN NULL;
        END""",
    # Row-level: API tokens are few.
    "iotsec_notify_tokens": """
        BEGIN
          IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('iotsec_changes', 'token:' || OLD.id);
          ELSE
            PERFORM pg_notify('iotsec_changes', 'token:' || NEW.id);
          END IF;
          RETURN NULL;
        END""",
    # Statement-level: the argument is the kind ('policy' or 'authority').
    "iotsec_notify_kind": """
        BEGIN
          PERFORM pg_notify('iotsec_changes', TG_ARGV[0] || ':*');
          RETURN NULL;
        END""",
}

_TRIGGERS = {
    "iotsec_devices_updated": "AFTER UPDATE ON devices REFERENCING NEW TABLE AS changed "
                              "FOR EACH STATEMENT EXECUTE FUNCTION iotsec_notify_devices()",
    "iotsec_devices_deleted": "AFTER DELETE ON devices REFERENCING OLD TABLE AS changed "
                              "FOR EACH STATEMENT EXECUTE FUNCTION iotsec_notify_devices()",
    "iotsec_certificates_revoked": "AFTER UPDATE ON certificates REFERENCING OLD TABLE AS "
                                   "old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
                                   "EXECUTE FUNCTION iotsec_notify_revocations()",
    "iotsec_api_tokens_changed": "AFTER UPDATE OF revoked, expires_at, role, secret_sha256 "
                                 "OR DELETE ON api_tokens FOR EACH ROW "
                                 "EXECUTE FUNCTION iotsec_notify_tokens()",
    **{f"iotsec_{table}_changed": f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
       "FOR EACH STATEMENT EXECUTE FUNCTION iotsec_notify_kind('policy')"
       for table in ("roles", "role_rules", "device_roles", "group_roles", "policy_version")},
    "iotsec_authorities_changed": "AFTER INSERT OR UPDATE OR DELETE ON authorities "
                                  "FOR EACH STATEMENT EXECUTE FUNCTION "
                                  "iotsec_notify_kind('authority')",
}


def _table(definition: str) -> str:
    return definition.split(" ON ", 1)[1].split(" ", 1)[0]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, body in _FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                   f"AS $body${body}$body$")
    for name, definition in _TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {definition}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, definition in _TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name} ON {_table(definition)}")
    for name in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
