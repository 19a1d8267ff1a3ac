"""Migration 0028: each device's group and role names on its ``devices`` row, kept equal to
the links (``device_groups``, ``device_roles``) by the database's own triggers, whatever
writes the links: the services, the bulk import (with PostgreSQL's per-row checks
skipped), plain SQL from another writer, cascades, an upgrade from 0027; and the
decisions' entries, which read the row alone, say what the links say. On SQLite and
PostgreSQL."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import text

from iotsec.access.policy import Role, Rule
from iotsec.app.access import roles as role_service
from iotsec.app.identity import bulk_import
from iotsec.app.identity.device_reads import decision_entries, get_device
from iotsec.app.identity.devices import NewDevice, add_device, import_devices
from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.store import migrate
from iotsec.store.bulk import references_checked
from iotsec.store.db import transaction
from tests.helpers import alembic_to
from tests.store.link_names import names_of


def _sql(rt: Runtime, *statements: str, **params: Any) -> None:
    """Statements of another writer than the services (plain SQL, one transaction)."""
    with rt.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def _role(rt: Runtime, name: str) -> None:
    role_service.add_role(rt, Role.build(name, [Rule.parse("allow", "publish", "x/#")]))


def test_every_writer_of_the_links_keeps_the_names(rt: Runtime) -> None:
    _role(rt, "ops")
    _role(rt, "zeta")
    add_device(rt, NewDevice.parse("d-1", groups=["site-b", "Site-A", "fleet"]))
    add_device(rt, NewDevice.parse("d-2", groups=["fleet"], roles=["zeta", "ops"]))
    add_device(rt, NewDevice.parse("d-3"))
    # Sorted byte by byte (upper case first), as on both stores.
    assert names_of(rt) == {"d-1": ("Site-A fleet site-b", "device"),
                            "d-2": ("fleet", "ops zeta"), "d-3": ("", "device")}

    role_service.assign_device(rt, "d-3", ["ops"])
    assert names_of(rt)["d-3"] == ("", "device ops")

    # Membership added, changed and removed by plain SQL (no service needed).
    _sql(rt, "INSERT INTO groups (name, created_at) VALUES ('aisle', 1)",
         "INSERT INTO device_groups (device_id, group_name) VALUES ('d-3', 'aisle'), "
         "('d-3', 'fleet'), ('d-2', 'aisle')")
    assert names_of(rt)["d-3"] == ("aisle fleet", "device ops")
    _sql(rt, "DELETE FROM device_groups WHERE device_id = 'd-3' AND group_name = 'fleet'")
    assert names_of(rt)["d-3"] == ("aisle", "device ops")
    _sql(rt, "UPDATE device_groups SET group_name = 'site-b' WHERE device_id = 'd-3'")
    assert names_of(rt)["d-3"] == ("site-b", "device ops")
    _sql(rt, "UPDATE device_roles SET device_id = 'd-1' WHERE device_id = 'd-3' "
             "AND role_name = 'ops'")
    assert names_of(rt)["d-1"] == ("Site-A fleet site-b", "device ops")
    assert names_of(rt)["d-3"] == ("site-b", "device")

    # A group deleted: its links go by cascade, and every member's names follow.
    _sql(rt, "DELETE FROM groups WHERE name = 'fleet'")
    assert names_of(rt) == {"d-1": ("Site-A site-b", "device ops"),
                            "d-2": ("aisle", "ops zeta"), "d-3": ("site-b", "device")}
    # A role removed once no device holds it (device_roles refuses a removal before).
    _sql(rt, "DELETE FROM device_roles WHERE role_name = 'zeta'",
         "DELETE FROM role_rules WHERE role_name = 'zeta'",
         "DELETE FROM roles WHERE name = 'zeta'")
    assert names_of(rt)["d-2"] == ("aisle", "ops")
    # A device deleted: its links go by cascade, the others are untouched.
    _sql(rt, "DELETE FROM certificates WHERE device_id = 'd-1'",
         "DELETE FROM devices WHERE id = 'd-1'")
    assert names_of(rt) == {"d-2": ("aisle", "ops"), "d-3": ("site-b", "device")}
    # A rolled-back change leaves the names as they were.
    with pytest.raises(RuntimeError), transaction(rt.engine) as conn:
        conn.execute(text("DELETE FROM device_groups WHERE device_id = 'd-2'"))
        assert conn.execute(text("SELECT group_names FROM devices WHERE id = 'd-2'")
                            ).scalar_one() == ""
        raise RuntimeError("rolled back")
    assert names_of(rt)["d-2"] == ("aisle", "ops")

    # The decisions' entries (the row alone) and the full read (the links) agree.
    entries = decision_entries(rt, ["d-2", "d-3"])
    for device_id, entry in entries.items():
        device = get_device(rt, device_id)
        assert (entry.identity.groups, entry.identity.roles) == (device.groups, device.roles)
    assert entries["d-2"].identity.groups == ("aisle",)
    assert entries["d-2"].identity.roles == ("ops",)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_keeps_them_under_replica_mode_and_truncate(rt: Runtime) -> None:
    """The bulk import skips the foreign keys' per-row triggers with
    ``session_replication_role = replica`` (ADR 0037); the names' triggers fire anyway."""
    add_device(rt, NewDevice.parse("d-1", groups=["g"]))
    add_device(rt, NewDevice.parse("d-2"))
    with rt.engine.begin() as conn, references_checked(conn) as skipped:
        assert skipped  # the test server's role may
        conn.execute(text("INSERT INTO device_groups (device_id, group_name) "
                          "VALUES ('d-2', 'g')"))
        conn.execute(text("DELETE FROM device_roles WHERE device_id = 'd-1'"))
    assert names_of(rt) == {"d-1": ("g", ""), "d-2": ("g", "device")}
    _sql(rt, "TRUNCATE device_groups")
    assert names_of(rt) == {"d-1": ("", ""), "d-2": ("", "device")}


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_postgresql_updates_the_touched_devices_by_key(rt: Runtime) -> None:
    """Migration 0029: the triggers look each touched device up by its key. PL/pgSQL keeps
    a statement's plan for the connection's life; 0028's join, planned on a small table,
    scanned every device for each link written, and went on doing so as the fleet grew."""
    import_devices(rt, (NewDevice.parse(f"d-{i}", groups=["g"]) for i in range(200)))
    with rt.engine.begin() as conn:
        for i in range(10):  # past the statement's first plans: the one kept is used
            conn.execute(text("INSERT INTO devices (id, state, attributes, created_at, "
                              "updated_at) VALUES (:id, 'pending', '{}', 1, 1)"),
                         {"id": f"n-{i}"})
            conn.execute(text("INSERT INTO device_groups (device_id, group_name) "
                              "VALUES (:id, 'g')"), {"id": f"n-{i}"})
            conn.execute(text("INSERT INTO device_roles (device_id, role_name) "
                              "VALUES (:id, 'device')"), {"id": f"n-{i}"})
        conn.execute(text("UPDATE device_groups SET group_name = 'g' WHERE device_id = 'n-0'"))
        conn.execute(text("DELETE FROM device_roles WHERE device_id = 'n-1'"))
        scans = conn.execute(text("SELECT seq_scan FROM pg_stat_xact_user_tables "
                                  "WHERE relid = 'devices'::regclass")).scalar_one()
    assert scans == 0
    names = names_of(rt)
    assert names["n-0"] == ("g", "device") and names["n-1"] == ("g", "")
    assert names["n-9"] == ("g", "device") and names["d-7"] == ("g", "device")
    # A statement that touches more than 100 devices is one set-wise update.
    _sql(rt, "DELETE FROM device_groups WHERE device_id LIKE 'd-%'")
    assert {n for d, n in names_of(rt).items() if d.startswith("d-")} == {("", "device")}


def test_imports_write_names_equal_to_the_links(rt: Runtime) -> None:
    _role(rt, "ops")
    assert import_devices(rt, [NewDevice.parse(f"n-{i}", groups=["b", "a"][:i % 3],
                                               roles=None if i % 2 else ["ops", "device"])
                               for i in range(30)], batch_size=7) == 30
    assert bulk_import.import_csv(rt, io.StringIO(
        "id,groups\nc-1,z;a;m\nc-2,\nc-3,a\n"), batch_size=2) == 3
    names = names_of(rt)
    assert names["c-1"] == ("a m z", "device")
    assert names["n-1"] == ("b", "device")
    assert names["n-2"] == ("a b", "device ops")
    # A refused import changes nothing, and leaves the triggers as they were.
    with pytest.raises(NotFoundError):
        bulk_import.import_rows(rt, [(1, "r-1", ("a",), "{}", None),
                                     (2, "r-2", ("a",), "{}", ("nope",))], batch_size=1)
    # The imports vouched for their own rows only (store.bulk.names_written): a link
    # written afterwards by another writer is followed by the triggers again.
    _sql(rt, "INSERT INTO device_groups (device_id, group_name) VALUES ('c-2', 'm')",
         "DELETE FROM device_roles WHERE device_id = 'n-2' AND role_name = 'device'")
    assert names_of(rt)["c-2"] == ("m", "device")
    assert names_of(rt)["n-2"] == ("a b", "ops")
    assert "r-1" not in names_of(rt)



def test_the_upgrade_fills_the_names_in_and_the_downgrade_removes_them(rt: Runtime) -> None:
    _role(rt, "ops")
    add_device(rt, NewDevice.parse("d-1", groups=["b", "a"], roles=["ops", "device"]))
    add_device(rt, NewDevice.parse("d-2"))
    add_device(rt, NewDevice.parse("d-3", roles=[]))
    alembic_to(rt, "downgrade", "0027")
    # Links written while the store had no names (no trigger either).
    _sql(rt, "INSERT INTO device_groups (device_id, group_name) VALUES ('d-3', 'a')",
         "DELETE FROM device_roles WHERE device_id = 'd-2'")
    alembic_to(rt, "upgrade", "head")
    assert migrate.is_current(rt.engine)
    assert names_of(rt) == {"d-1": ("a b", "device ops"), "d-2": ("", ""),
                            "d-3": ("a", "")}
    # The triggers are there after the upgrade.
    role_service.assign_device(rt, "d-2", ["ops"])
    assert names_of(rt)["d-2"] == ("", "ops")
