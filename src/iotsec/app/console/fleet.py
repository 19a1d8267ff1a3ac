"""The console's device list: search by id prefix, filter by group, state and role, in
pages that continue after the last id shown (keyset paging).

A page is one index range scan: ids in order from the search prefix (or the last id of
the previous page), so it costs the same at the millionth device as at the first. There is
no total count and no OFFSET; a page reads one row more than it shows to know whether
another page follows. An attribute filter is checked row by row along that scan: quick for
a common attribute, a longer scan for a rare one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy import select

from iotsec.access.policy import Role, parse_role_name
from iotsec.app.access.roles import load_roles
from iotsec.app.identity.devices import get_devices
from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError
from iotsec.identity.registry import (
    Device,
    DeviceState,
    parse_attributes,
    parse_device_id,
    parse_group_name,
)
from iotsec.store import models as m
from iotsec.store.db import reading

__all__ = ["MAX_PAGE", "DevicePage", "DeviceQuery", "device_roles", "search_devices"]

MAX_PAGE = 200
_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """A validated search: every field optional."""

    prefix: str | None = None
    group: str | None = None
    state: DeviceState | None = None
    role: str | None = None
    #: One attribute that must have this value (``key``, ``value``).
    attribute: tuple[str, str] | None = None

    @property
    def attribute_text(self) -> str:
        return f"{self.attribute[0]}={self.attribute[1]}" if self.attribute else ""

    @classmethod
    def parse(cls, *, prefix: str = "", group: str = "", state: str = "", role: str = "",
              attribute: str = "") -> DeviceQuery:
        prefix, group, state, role = (v.strip() for v in (prefix, group, state, role))
        pair = None
        if attribute.strip():
            ((key, value),) = parse_attributes([attribute.strip()]).items()
            pair = (key, value)
        if prefix and not _PREFIX.fullmatch(prefix):
            raise InvalidInputError("a device id search holds letters, digits and . _ : - "
                                    "only (at most 128)", hint="search by the id's beginning")
        try:
            parsed_state = DeviceState(state) if state else None
        except ValueError:
            raise InvalidInputError(f"unknown device state {state[:20]!r}",
                                    hint="use " + ", ".join(s.value for s in DeviceState)
                                    ) from None
        return cls(prefix or None, parse_group_name(group) if group else None, parsed_state,
                   parse_role_name(role) if role else None, pair)


@dataclass(frozen=True, slots=True)
class DevicePage:
    devices: list[Device]
    #: The id to continue after, or ``None`` on the last page.
    next_after: str | None


def search_devices(rt: Runtime, query: DeviceQuery, *, after: str | None = None,
                   limit: int = 50) -> DevicePage:
    """One page of the devices matching ``query``, in id order, after ``after``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"a page holds 1 to {MAX_PAGE} devices")
    d = m.devices.c
    stmt = select(d.id).order_by(d.id).limit(limit + 1)
    if query.prefix is not None:
        # A range on the primary key (index order is byte order for these characters),
        # checked again by LIKE in case the database collates otherwise.
        stmt = stmt.where(d.id >= query.prefix, d.id < query.prefix + "\x7f",
                          d.id.like(query.prefix + "%"))
    if after is not None:
        stmt = stmt.where(d.id > parse_device_id(after))
    if query.state is not None:
        stmt = stmt.where(d.state == query.state.value)
    if query.group is not None:
        g = m.device_groups.c
        stmt = stmt.where(d.id.in_(select(g.device_id).where(g.group_name == query.group)))
    if query.attribute is not None:
        # Attributes are stored as JSON with sorted keys: the pair's own JSON text is in the
        # column exactly when the device has it (LIKE's wildcards escaped).
        fragment = json.dumps(dict([query.attribute]))[1:-1]
        for ch in ("\\", "%", "_"):
            fragment = fragment.replace(ch, "\\" + ch)
        stmt = stmt.where(d.attributes.like(f"%{fragment}%", escape="\\"))
    if query.role is not None:
        r = m.device_roles.c
        stmt = stmt.where(d.id.in_(select(r.device_id).where(r.role_name == query.role)))
    with reading(rt.engine) as conn:
        ids = list(conn.execute(stmt).scalars())
    more = len(ids) > limit
    ids = ids[:limit]
    found = get_devices(rt, ids)
    return DevicePage([found[i] for i in ids if i in found], ids[-1] if more else None)


def device_roles(rt: Runtime, device: Device) -> tuple[list[str], list[tuple[str, str]],
                                                        list[Role]]:
    """The roles bound to ``device`` directly, those it has through its groups (group,
    role), and every one of those roles with its rules: what the device may do."""
    dr, gr = m.device_roles.c, m.group_roles.c
    with reading(rt.engine) as conn:
        direct = list(conn.execute(select(dr.role_name).where(dr.device_id == device.id)
                                   .order_by(dr.role_name)).scalars())
        via = [(r.group_name, r.role_name) for r in conn.execute(
            select(gr.group_name, gr.role_name).where(gr.group_name.in_(device.groups))
            .order_by(gr.group_name, gr.role_name))] if device.groups else []
        names = sorted(set(direct) | {role for _, role in via})
        roles = load_roles(conn, names) if names else []
    return direct, via, roles
