"""The fleet as the broker's ACL sees it: every device (:func:`load_fleet`), or only the
devices the ACL depends on, read with bounded queries (:func:`load_acl_fleet`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from iotsec.access.policy import Role
from iotsec.app.access.roles import load_roles
from iotsec.app.identity.bindings import DEFAULT_ROLE
from iotsec.app.identity.devices import groups_of, roles_of
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import FleetDevice, every_device_needs_block, has_connect_denials
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["load_acl_fleet", "load_fleet", "new_device_roles"]


def new_device_roles(roles: list[Role]) -> tuple[str, ...] | None:
    """What a device registered without roles gets: the default role, when it exists."""
    return (DEFAULT_ROLE,) if any(r.name == DEFAULT_ROLE for r in roles) else None


def load_fleet(rt: Runtime) -> tuple[list[Role], list[FleetDevice]]:
    """Roles and every registered device with its effective roles, groups, attributes
    (only when a rule uses one) and currently valid certificate serials."""
    now = ts(rt.now())
    c = m.certificates.c
    with reading(rt.engine) as conn:
        roles = load_roles(conn)
        needs_attrs = any(".attr." in r.resource for role in roles for r in role.rules)
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
        rows = conn.execute(select(*columns).order_by(m.devices.c.id)).all()
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


#: States in which a device takes part in the ACL's shared pattern lines.
_ENABLED = (DeviceState.ACTIVE.value, DeviceState.PENDING.value)
_CHUNK = 500


def _valid_certificate(now: int) -> Any:
    c = m.certificates.c
    return (c.device_id.is_not(None)) & (c.kind == "device") & (c.not_after > now) & (
        (c.revoked_at.is_(None)) | (c.revoked_at > now))


def _effective(own: Sequence[str], groups: tuple[str, ...],
               group_roles: dict[str, list[str]]) -> tuple[str, ...]:
    effective = list(own)
    for g in groups:
        effective += [r for r in group_roles.get(g, ()) if r not in effective]
    return tuple(effective)


def _devices(conn: Connection, ids: list[str], now: int, group_roles: dict[str, list[str]],
             needs_attrs: bool) -> list[FleetDevice]:
    """The devices ``ids`` (read in chunks) as the ACL sees them."""
    out: list[FleetDevice] = []
    enabled_states = {*_ENABLED, DeviceState.QUARANTINED.value}
    c = m.certificates.c
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        own = roles_of(conn, chunk)
        groups = groups_of(conn, chunk)
        serials: dict[str, list[str]] = {}
        for d, s in conn.execute(select(c.device_id, c.serial).where(
                c.device_id.in_(chunk), _valid_certificate(now))):
            serials.setdefault(d, []).append(s)
        columns = [m.devices.c.id, m.devices.c.state]
        if needs_attrs:
            columns.append(m.devices.c.attributes)
        for row in conn.execute(select(*columns).where(m.devices.c.id.in_(chunk))):
            device_groups = groups.get(row.id, ())
            out.append(FleetDevice(
                id=row.id, enabled=row.state in enabled_states,
                roles=_effective(own.get(row.id, ()), device_groups, group_roles),
                groups=device_groups,
                attributes=json.loads(row.attributes) if needs_attrs else {},
                serials=tuple(serials.get(row.id, ())),
                quarantined=row.state == DeviceState.QUARANTINED.value))
    return out


def _lacking(conn: Connection, role: str, has_group_roles: bool) -> str | None:
    """An enabled device without ``role`` (its own, or through a group), if there is one.

    A role no group grants is held by every enabled device when the enabled devices
    holding it are as many as the enabled devices: three counts over indexes, no join of
    the fleet with its bindings. Otherwise (or when the counts differ) an anti-join finds
    a device that lacks it."""
    d, dr = m.devices.c, m.device_roles.c
    if not has_group_roles:
        off = [s.value for s in DeviceState if s.value not in _ENABLED]
        devices_all = conn.execute(select(func.count()).select_from(m.devices)).scalar_one()
        devices_off = conn.execute(select(func.count()).select_from(m.devices)
                                   .where(d.state.in_(off))).scalar_one()
        holders = conn.execute(select(func.count()).select_from(m.device_roles)
                               .where(dr.role_name == role)).scalar_one()
        holders_off = conn.execute(select(func.count()).select_from(m.device_roles).join(
            m.devices, d.id == dr.device_id).where(dr.role_name == role,
                                                     d.state.in_(off))).scalar_one()
        if holders - holders_off == devices_all - devices_off:
            return None
    query = select(d.id).where(d.state.in_(_ENABLED), ~select(dr.device_id).where(
        dr.device_id == d.id, dr.role_name == role).exists())
    if has_group_roles:
        query = query.where(~select(m.device_groups.c.device_id).join(
            m.group_roles, m.group_roles.c.group_name == m.device_groups.c.group_name).where(
            m.device_groups.c.device_id == d.id, m.group_roles.c.role_name == role).exists())
    # Any witness will do: no order, so the database may hash rather than walk an index.
    found = conn.execute(query.limit(1)).scalar()
    return None if found is None else str(found)


def load_acl_fleet(rt: Runtime) -> tuple[list[Role], list[FleetDevice]]:
    """Roles and the devices the broker's ACL depends on, read with bounded queries: every
    disabled, retired, awaiting-approval or quarantined device; the enabled devices that
    hold a role beyond those every enabled device holds (with a current certificate); and
    two representatives of the rest (the first enabled device, which fixes the order of
    the shared roles, and one holding exactly the shared roles). :func:`compile_acl` writes
    the same file from them as from the whole fleet: an enabled device holding only the
    shared roles gets nothing but the pattern lines.

    A ``deny connect`` rule, or shared rules that need per-device expansion, make every
    device count: the whole fleet is read then (:func:`load_fleet`)."""
    with reading(rt.engine) as conn:
        roles = load_roles(conn)
    if has_connect_denials(roles):
        return roles, load_fleet(rt)[1]
    new_roles = new_device_roles(roles)
    by_name = {r.name for r in roles}
    needs_attrs = any(".attr." in r.resource for role in roles for r in role.rules)
    now = ts(rt.now())
    d = m.devices.c
    with reading(rt.engine) as conn:
        group_roles: dict[str, list[str]] = {}
        for g, r in conn.execute(select(m.group_roles.c.group_name, m.group_roles.c.role_name)
                                 .order_by(m.group_roles.c.group_name,
                                           m.group_roles.c.role_name)):
            group_roles.setdefault(g, []).append(r)
        grouped_roles = {r for rs in group_roles.values() for r in rs}
        first_id = conn.execute(select(d.id).where(d.state.in_(_ENABLED)).order_by(d.id)
                                .limit(1)).scalar()
        first = _devices(conn, [first_id], now, group_roles, needs_attrs) if first_id else []
        # The shared roles: held by the first enabled device (in its order), by a newly
        # registered device, and by every other enabled device (an anti-join per role).
        # A device lacking a role is kept as its witness, so that compile_acl finds the
        # same shared roles from the devices given to it.
        candidates = (list(first[0].roles) if first else list(new_roles or ()))
        universal: list[str] = []
        witnesses: set[str] = set()
        for r in candidates:
            if r not in by_name or (new_roles is not None and r not in new_roles):
                continue
            witness = _lacking(conn, r, r in grouped_roles) if first else None
            if witness is None:
                universal.append(r)
            else:
                witnesses.add(witness)
        if every_device_needs_block(roles, universal):
            return roles, load_fleet(rt)[1]
        others = sorted(by_name - set(universal))
        special_ids: set[str] = set()
        if others:
            own = select(m.device_roles.c.device_id).where(m.device_roles.c.role_name.in_(others))
            via = [g for g, rs in group_roles.items() if any(r in others for r in rs)]
            query = select(d.id).where(d.state.in_(_ENABLED), d.id.in_(own))
            special_ids.update(conn.execute(query).scalars())
            for i in range(0, len(via), _CHUNK):
                special_ids.update(conn.execute(select(d.id).where(
                    d.state.in_(_ENABLED), d.id.in_(select(m.device_groups.c.device_id).where(
                        m.device_groups.c.group_name.in_(via[i:i + _CHUNK]))))).scalars())
        # Of the devices holding more, only those with a current certificate get a block.
        with_certificate: set[str] = set()
        ordered = sorted(special_ids)
        c = m.certificates.c
        for i in range(0, len(ordered), _CHUNK):
            with_certificate.update(conn.execute(select(c.device_id).distinct().where(
                c.device_id.in_(ordered[i:i + _CHUNK]), _valid_certificate(now))).scalars())
        singled = conn.execute(select(d.id).where(d.state.not_in(_ENABLED))
                               .order_by(d.id)).scalars().all()
        wanted = sorted({*singled, *with_certificate, *witnesses,
                         *([first_id] if first_id is not None else [])})
        devices = _devices(conn, wanted, now, group_roles, needs_attrs)
    devices.sort(key=lambda x: x.id)
    return roles, devices
