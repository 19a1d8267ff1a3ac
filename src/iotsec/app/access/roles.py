"""Roles and their bindings to devices and groups: the stored side of the access policy.

Every change bumps the store's policy version, which is how every serving process learns
that its compiled policy is stale (:mod:`iotsec.app.access.decisions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from iotsec.access.policy import Role, parse_role_name
from iotsec.app.access.policy_reads import assemble_roles
from iotsec.app.events import Event
from iotsec.app.identity.bindings import (
    assign_roles,
    bump_policy_version,
    policy_changed,
    require_roles,
    roles_changed,
)
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, NotFoundError
from iotsec.identity.registry import parse_device_id, parse_group_name
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = [
    "RoleInfo", "add_group", "add_role", "assign_device", "get_role", "list_roles", "load_roles",
    "write_role"
]


def _role_exists(conn: Connection, name: str) -> bool:
    return conn.execute(select(m.roles.c.name).where(m.roles.c.name == name)).first() is not None


def write_role(conn: Connection, role: Role, now: int, *, replace: bool) -> None:
    """Insert a role (or replace its rules and description) inside a transaction."""
    if _role_exists(conn, role.name):
        if not replace:
            raise ConflictError(f"role {role.name!r} already exists",
                                hint="choose another name, or change it with "
                                "'iotsec policy apply'")
        conn.execute(update(m.roles).where(m.roles.c.name == role.name)
                     .values(description=role.description, updated_at=now))
        conn.execute(delete(m.role_rules).where(m.role_rules.c.role_name == role.name))
    else:
        conn.execute(insert(m.roles).values(name=role.name, description=role.description,
                                            created_at=now, updated_at=now))
    if role.rules:
        conn.execute(insert(m.role_rules), [
            {"role_name": role.name, "position": i, "effect": r.effect.value,
             "action": r.action, "resource": r.resource} for i, r in enumerate(role.rules)])
    bump_policy_version(conn)


def add_role(rt: Runtime, role: Role, *, actor: str | None = None) -> Role:
    moment = rt.now()
    with transaction(rt.engine) as conn:
        write_role(conn, role, ts(moment), replace=False)
        rt.events.record_in(conn, Event(moment, "role.added", "success", actor=actor,
                                        subject=role.name,
                                        detail={"rules": len(role.rules)}))
    roles_changed(rt)
    return role


def load_roles(conn: Connection, names: Sequence[str] | None = None) -> list[Role]:
    query = select(m.role_rules).order_by(m.role_rules.c.role_name, m.role_rules.c.position)
    role_query = select(m.roles).order_by(m.roles.c.name)
    if names is not None:
        query = query.where(m.role_rules.c.role_name.in_(names))
        role_query = role_query.where(m.roles.c.name.in_(names))
    rules = conn.execute(query).all()
    return assemble_roles(conn.execute(role_query), rules)


@dataclass(frozen=True)
class RoleInfo:
    role: Role
    devices: int
    groups: tuple[str, ...]


def list_roles(rt: Runtime) -> list[RoleInfo]:
    with reading(rt.engine) as conn:
        roles = load_roles(conn)
        counts: dict[str, int] = {
            name: int(n) for name, n in conn.execute(
                select(m.device_roles.c.role_name, func.count())
                .group_by(m.device_roles.c.role_name))}
        groups: dict[str, list[str]] = {}
        for g, r in conn.execute(select(m.group_roles.c.group_name, m.group_roles.c.role_name)
                                 .order_by(m.group_roles.c.group_name)):
            groups.setdefault(r, []).append(g)
    return [RoleInfo(role, int(counts.get(role.name, 0)), tuple(groups.get(role.name, ())))
            for role in roles]


def get_role(rt: Runtime, name: str) -> RoleInfo:
    name = parse_role_name(name)
    for info in list_roles(rt):
        if info.role.name == name:
            return info
    raise NotFoundError(f"role {name!r} does not exist", hint="see 'iotsec role list'")


def assign_device(rt: Runtime, device_id: str, roles: Sequence[str], *,
                  actor: str | None = None) -> list[str]:
    """``iotsec device assign ID --role NAME``; returns the device's roles afterwards (a
    ``device.roles`` event in the same transaction)."""
    device_id = parse_device_id(device_id)
    moment = rt.now()
    with transaction(rt.engine) as conn:
        if conn.execute(select(m.devices.c.id).where(m.devices.c.id == device_id)).first() is None:
            raise NotFoundError(f"device {device_id!r} is not registered",
                                hint="register it with 'iotsec device add'")
        assign_roles(conn, [device_id], roles)
        # The device's roles are part of its registry entry: serving processes read it
        # again when its ``updated_at`` moves.
        conn.execute(update(m.devices).where(m.devices.c.id == device_id)
                     .values(updated_at=ts(moment)))
        held = list(conn.execute(select(m.device_roles.c.role_name).where(
            m.device_roles.c.device_id == device_id).order_by(m.device_roles.c.role_name)
        ).scalars())
        rt.events.record_in(conn, Event(moment, "device.roles", "success", actor=actor,
                                        subject=device_id,
                                        detail={"assigned": list(roles), "roles": held}))
    policy_changed(rt)
    return held


def add_group(rt: Runtime, name: str, roles: Sequence[str], *,
              actor: str | None = None) -> list[str]:
    """Create a group if needed and bind roles to it; returns the group's roles (a
    ``group.roles`` event in the same transaction)."""
    name = parse_group_name(name)
    moment = rt.now()
    now = ts(moment)
    with transaction(rt.engine) as conn:
        wanted = require_roles(conn, roles)
        exists = conn.execute(select(m.groups.c.name).where(m.groups.c.name == name)).first()
        if exists is None:
            conn.execute(insert(m.groups).values(name=name, created_at=now))
        have = set(conn.execute(select(m.group_roles.c.role_name)
                                .where(m.group_roles.c.group_name == name)).scalars())
        if exists is not None and set(wanted) <= have:
            raise ConflictError(f"group {name!r} already exists with these roles",
                                hint="nothing to do; see 'iotsec role list'")
        new = [r for r in wanted if r not in have]
        if new:
            conn.execute(insert(m.group_roles), [{"group_name": name, "role_name": r}
                                                 for r in new])
            bump_policy_version(conn)
        rt.events.record_in(conn, Event(moment, "group.roles", "success", actor=actor,
                                        subject=name, detail={
                                            "created": exists is None, "added": new,
                                            "roles": sorted(have | set(new))}))
    roles_changed(rt)
    return sorted(have | set(new))


