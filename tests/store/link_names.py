"""What the tests of migration 0028 compare: each device's group and role names as its
``devices`` row holds them, and as the links say."""

from __future__ import annotations

from sqlalchemy import Connection, text

from iotsec.app.runtime import Runtime


def _links(conn: Connection, table: str, column: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    # The two link tables, named by the callers below.
    query = text(f"SELECT device_id, {column} FROM {table}")  # noqa: S608
    for device_id, name in conn.execute(query):
        found.setdefault(device_id, []).append(name)
    return {d: " ".join(sorted(names)) for d, names in found.items()}


def names_of(rt: Runtime) -> dict[str, tuple[str, str]]:
    """Each device's (group_names, role_names) as its row holds them, after checking that
    they equal what the links say."""
    with rt.engine.connect() as conn:
        rows = {d: (g, r) for d, g, r in conn.execute(
            text("SELECT id, group_names, role_names FROM devices"))}
        groups = _links(conn, "device_groups", "group_name")
        roles = _links(conn, "device_roles", "role_name")
    assert rows == {d: (groups.get(d, ""), roles.get(d, "")) for d in rows}
    return rows
