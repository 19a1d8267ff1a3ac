"""The fleet as the broker's ACL sees it, read from the store in a few bulk queries."""

from __future__ import annotations

import json

from sqlalchemy import select

from iotsec.access.policy import Role
from iotsec.app.access.roles import list_roles
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import FleetDevice
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["load_fleet"]


def load_fleet(rt: Runtime) -> tuple[list[Role], list[FleetDevice]]:
    """Roles and every registered device with its effective roles, groups, attributes
    (only when a rule uses one) and currently valid certificate serials."""
    roles = [info.role for info in list_roles(rt)]
    needs_attrs = any(".attr." in r.resource for role in roles for r in role.rules)
    now = ts(rt.now())
    c = m.certificates.c
    with reading(rt.engine) as conn:
        own: dict[str, list[str]] = {}
        for d, r in conn.execute(select(m.device_roles.c.device_id, m.device_roles.c.role_name)
                                 .order_by(m.device_roles.c.device_id,
                                           m.device_roles.c.role_name)):
            own.setdefault(d, []).append(r)
        group_roles: dict[str, list[str]] = {}
        for g, r in conn.execute(select(m.group_roles.c.group_name, m.group_roles.c.role_name)
                                 .order_by(m.group_roles.c.group_name,
                                           m.group_roles.c.role_name)):
            group_roles.setdefault(g, []).append(r)
        groups: dict[str, list[str]] = {}
        for d, g in conn.execute(select(m.device_groups.c.device_id,
                                        m.device_groups.c.group_name)
                                 .order_by(m.device_groups.c.device_id,
                                           m.device_groups.c.group_name)):
            groups.setdefault(d, []).append(g)
        serials: dict[str, list[str]] = {}
        for d, s in conn.execute(select(c.device_id, c.serial).where(
                c.device_id.is_not(None), c.kind == "device", c.not_after > now,
                (c.revoked_at.is_(None)) | (c.revoked_at > now))):
            serials.setdefault(d, []).append(s)
        columns = [m.devices.c.id, m.devices.c.state]
        if needs_attrs:
            columns.append(m.devices.c.attributes)
        rows = conn.execute(select(*columns)).all()
    interned: dict[tuple[str, ...], tuple[str, ...]] = {}
    enabled_states = {DeviceState.ACTIVE.value, DeviceState.PENDING.value,
                      DeviceState.QUARANTINED.value}
    devices = []
    for row in rows:
        device_groups = tuple(groups.get(row.id, ()))
        effective = list(own.get(row.id, ()))
        for g in device_groups:
            effective += [r for r in group_roles.get(g, ()) if r not in effective]
        key = tuple(effective)
        roles_t = interned.setdefault(key, key)
        attributes = json.loads(row.attributes) if needs_attrs else {}
        devices.append(FleetDevice(id=row.id, enabled=row.state in enabled_states,
                                   roles=roles_t, groups=device_groups, attributes=attributes,
                                   serials=tuple(serials.get(row.id, ())),
                                   quarantined=row.state == DeviceState.QUARANTINED.value))
    return roles, devices
