"""Which roles devices hold: binding roles to devices, and telling every process that the
policy or the registry changed.

The role definitions themselves are access control's (:mod:`iotsec.app.access.roles`); a
device is given :data:`DEFAULT_ROLE` when it is registered, which is why bindings live with
the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, insert, select, update

from iotsec.access.policy import parse_role_name
from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.store import models as m
from iotsec.store.direct import Direct, DriverUnit, Unit, core

__all__ = ["DEFAULT_ROLE", "assign_roles", "bump_policy_version", "policy_changed",
           "require_roles", "roles_changed"]

DEFAULT_ROLE = "device"


# Statements every registration of one device runs (an EST enrolment creates its device),
# on the driver (iotsec.store.direct): through SQLAlchemy each costs more than the database.
_BUMP = Direct(update(m.policy_version).where(m.policy_version.c.id == 1)
               .values(version=m.policy_version.c.version + 1))
_ROLE = Direct(select(m.roles.c.name).where(m.roles.c.name == bindparam("name")))
_BIND = Direct(insert(m.device_roles).values(device_id=bindparam("device_id"),
                                             role_name=bindparam("role_name")))
_ONE_DEVICE_ROLES = Direct(select(m.device_roles.c.device_id, m.device_roles.c.role_name)
                           .where(m.device_roles.c.device_id == bindparam("device")))


def bump_policy_version(conn: Unit) -> None:
    _BUMP.execute(conn).close()


def policy_changed(rt: Runtime) -> None:
    """This process sees its own policy and registry changes at once (other serving
    processes within ``hot_cache_seconds``)."""
    rt.forget("policy-version")
    rt.registry_changed()


def roles_changed(rt: Runtime) -> None:
    """After a change of roles or group bindings only (no registry entry changed): this
    process recompiles its policy at once, and keeps the registry entries it has read (a
    device's own roles live with its entry; see :func:`assign_roles`)."""
    rt.forget("policy-version")


def require_roles(conn: Unit, names: Iterable[str]) -> list[str]:
    wanted = sorted({parse_role_name(n) for n in names})
    if not wanted:
        return []
    # One device's roles, as a rule (a unit of work on the driver runs nothing but driver
    # statements): a look-up each on the driver.
    if len(wanted) <= 4 or isinstance(conn, DriverUnit):
        have = {n for n in wanted if _ROLE.first(conn, {"name": n}) is not None}
    else:
        have = set(core(conn).execute(select(m.roles.c.name)
                                .where(m.roles.c.name.in_(wanted))).scalars())
    missing = [n for n in wanted if n not in have]
    if missing:
        raise NotFoundError(f"role {missing[0]!r} does not exist",
                            hint="create it with 'iotsec role add' (see 'iotsec role list')")
    return wanted


def assign_roles(conn: Unit, device_ids: Sequence[str], roles: Sequence[str], *,
                 registering: bool = False) -> None:
    """Bind roles to devices inside a transaction (already bound pairs are kept).

    A device's own roles are part of its registry entry: a caller binding roles to devices
    that are already registered also moves their ``updated_at``, which is how serving
    processes learn to read those entries again (newly inserted devices have it already).

    ``registering``: the devices are inserted in this transaction, so none has a binding
    to look up, and their bindings leave the policy version alone: the compiled policy
    holds the roles and the groups' bindings, not the devices', and a device that was not
    registered has no entry in any process's cache (its first decision reads it). Every
    device enrolled just in time would otherwise make every serving process compile its
    policy again, and on PostgreSQL take the one version row's lock in each enrolment's
    transaction (the enrolments of all processes then queue on it, and a group's requests
    can deadlock with another process's)."""
    wanted = require_roles(conn, roles)
    if not wanted or not device_ids:
        return
    existing: set[tuple[str, str]] = set()
    if len(device_ids) == 1:
        if not registering:  # a device inserted in this transaction has no bindings yet
            existing.update((r.device_id, r.role_name)
                            for r in _ONE_DEVICE_ROLES.rows(conn, {"device": device_ids[0]}))
        rows = [{"device_id": device_ids[0], "role_name": r} for r in wanted
                if (device_ids[0], r) not in existing]
        if rows:
            _BIND.execute_many(conn, rows)
            if not registering:
                bump_policy_version(conn)
        return
    if not registering:
        for i in range(0, len(device_ids), 500):
            existing.update((d, r) for d, r in core(conn).execute(
                select(m.device_roles.c.device_id, m.device_roles.c.role_name)
                .where(m.device_roles.c.device_id.in_(device_ids[i:i + 500]))))
    rows = [{"device_id": d, "role_name": r} for d in device_ids for r in wanted
            if (d, r) not in existing]
    if rows:
        core(conn).execute(insert(m.device_roles), rows)
        if not registering:
            bump_policy_version(conn)
