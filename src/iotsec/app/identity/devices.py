"""Device registry use cases."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    Connection,
    Row,
    String,
    any_,
    bindparam,
    func,
    insert,
    select,
    update,
)

from iotsec.access.policy import parse_role_name
from iotsec.app.events import Event
from iotsec.app.identity import bulk_import
from iotsec.app.identity.bindings import DEFAULT_ROLE, assign_roles, policy_changed
from iotsec.app.identity.device_reads import decision_entries, device_of, get_device
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, InvalidInputError, NotFoundError
from iotsec.identity.registry import (
    Device,
    DeviceState,
    parse_attributes,
    parse_device_id,
    parse_group_name,
)
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.store.direct import Direct, DriverUnit, Unit, core
from iotsec.timeutil import ts

__all__ = [
    "IMPORT_BATCH", "MAX_LIST", "NewDevice", "add_device", "decision_entries", "get_device",
    "get_devices", "groups_of", "import_devices", "insert_devices", "list_devices", "roles_of",
    "set_state",
]

IMPORT_BATCH = bulk_import.IMPORT_BATCH
MAX_LIST = 10_000


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A validated registration request."""

    id: str
    groups: tuple[str, ...] = ()
    attributes: dict[str, str] | None = None
    #: Roles to bind; ``None`` means the default least-privilege role ``device``.
    roles: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, device_id: str, groups: Iterable[str] = (),
              attributes: Iterable[str] | dict[str, str] = (),
              roles: Iterable[str] | None = None) -> NewDevice:
        return cls(id=parse_device_id(device_id),
                   groups=tuple(sorted({parse_group_name(g) for g in groups})),
                   attributes=parse_attributes(attributes),
                   roles=None if roles is None else tuple(sorted({parse_role_name(r)
                                                                  for r in roles})))


# Registering one device (an EST enrolment creates its device) runs its statements on the
# driver (iotsec.store.direct): through SQLAlchemy each costs more than the database.
_GROUP = Direct(select(m.groups.c.name).where(m.groups.c.name == bindparam("name")))
_ADD_GROUP = Direct(insert(m.groups).values(name=bindparam("name"),
                                            created_at=bindparam("created_at")))
_ADD_DEVICE = Direct(insert(m.devices).values(
    {c: bindparam(c) for c in ("id", "state", "attributes", "created_at", "updated_at",
                               "group_names", "role_names")}))
_DEFAULT_ROLE = Direct(select(m.roles.c.name).where(m.roles.c.name == DEFAULT_ROLE))
_LINK_GROUP = Direct(insert(m.device_groups).values(device_id=bindparam("device_id"),
                                                    group_name=bindparam("group_name")))


def _ensure_groups(conn: Unit, names: set[str], now: int) -> None:
    if not names:
        return
    # One device's groups (a unit of work on the driver registers one device and runs
    # nothing but driver statements): a look-up each on the driver.
    if len(names) <= 4 or isinstance(conn, DriverUnit):
        have = {n for n in names if _GROUP.first(conn, {"name": n}) is not None}
    else:
        have = set(core(conn).execute(select(m.groups.c.name)
                                      .where(m.groups.c.name.in_(names))).scalars())
    missing = sorted(names - have)
    if missing:
        _ADD_GROUP.execute_many(conn, [{"name": n, "created_at": now} for n in missing])


def _insert_devices(conn: Unit, batch: Sequence[NewDevice], now: int,
                    state: DeviceState = DeviceState.PENDING) -> None:
    _ensure_groups(conn, {g for d in batch for g in d.groups}, now)
    # The default role is bound when it exists (``iotsec init`` creates it).
    default: tuple[str, ...] = ()
    if any(d.roles is None for d in batch) and _DEFAULT_ROLE.first(conn):
        default = (DEFAULT_ROLE,)
    # Each row carries the group and role names its links will have (sorted), so the
    # database's triggers that keep them (migration 0028) find nothing to change.
    rows = [{"id": d.id, "state": state.value,
             "attributes": json.dumps(d.attributes or {}, sort_keys=True),
             "created_at": now, "updated_at": now, "group_names": " ".join(d.groups),
             "role_names": " ".join(default if d.roles is None else d.roles)}
            for d in batch]
    links = [{"device_id": d.id, "group_name": g} for d in batch for g in d.groups]
    if len(batch) == 1:
        _ADD_DEVICE.execute(conn, rows[0]).close()
        if links:
            _LINK_GROUP.execute_many(conn, links)
    else:
        core(conn).execute(insert(m.devices), rows)
        if links:
            core(conn).execute(insert(m.device_groups), links)
    # Bind roles grouped by role set, so a bulk import is a handful of statements.
    by_roles: dict[tuple[str, ...], list[str]] = {}
    for d in batch:
        by_roles.setdefault(default if d.roles is None else d.roles, []).append(d.id)
    for roles, ids in by_roles.items():
        if roles:
            assign_roles(conn, ids, roles, registering=True)


def insert_devices(conn: Unit, batch: Sequence[NewDevice], now: int, *,
                   state: DeviceState = DeviceState.PENDING) -> None:
    """Register new devices (in ``state``, pending unless the caller's unit of work moves
    them on itself, with their groups and roles) in the caller's transaction. A device
    that is registered already fails the statement (a unique violation)."""
    _insert_devices(conn, batch, now, state)


def add_device(rt: Runtime, new: NewDevice, *, actor: str | None = None) -> Device:
    """Register a device (pending); a ``device.added`` event in the same transaction."""
    moment = rt.now()
    now = ts(moment)
    with transaction(rt.engine) as conn:
        exists = conn.execute(select(m.devices.c.id).where(m.devices.c.id == new.id)).first()
        if exists:
            raise ConflictError(f"device {new.id!r} is already registered",
                                hint="use 'iotsec device show' to see it")
        _insert_devices(conn, [new], now)
        rt.events.record_in(conn, Event(moment, "device.added", "success", actor=actor,
                                        subject=new.id, detail={
                                            "groups": list(new.groups),
                                            "roles": list(new.roles or (DEFAULT_ROLE,))}))
    policy_changed(rt)
    return get_device(rt, new.id)


def import_devices(rt: Runtime, devices: Iterable[NewDevice], *,
                   progress: Callable[[int], None] | None = None,
                   batch_size: int = IMPORT_BATCH, actor: str | None = None) -> int:
    """Register many devices in one transaction, written in batches as ``devices`` is
    read: all or nothing (see :mod:`iotsec.app.identity.bulk_import`).

    An id that is already registered, or that appears twice, refuses the whole import. One
    ``device.imported`` event (the count, the first and last ids) in the same transaction.
    """
    rows = ((n, d.id, d.groups, json.dumps(d.attributes or {}, sort_keys=True), d.roles)
            for n, d in enumerate(devices, 1))
    return bulk_import.import_rows(rt, rows, progress=progress, batch_size=batch_size,
                                   actor=actor, unit="entry")


#: Ids per statement when reading many devices (bound parameters stay well within every
#: backend's limit).
_CHUNK = 2000


def _bound(conn: Connection, key: Column[str], value: Column[str], ids: Sequence[str]
           ) -> dict[str, tuple[str, ...]]:
    """What ``value`` each of ``ids`` has in ``key``'s table (sorted), read in chunks."""
    result: dict[str, list[str]] = {}
    for i in range(0, len(ids), _CHUNK):
        for device_id, bound in conn.execute(select(key, value)
                                             .where(key.in_(ids[i:i + _CHUNK]))):
            result.setdefault(device_id, []).append(bound)
    return {k: tuple(sorted(v)) for k, v in result.items()}


def groups_of(conn: Connection, ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The groups of each device (sorted); devices in none are absent."""
    return _bound(conn, m.device_groups.c.device_id, m.device_groups.c.group_name, ids)


def roles_of(conn: Connection, ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The roles bound to each device itself (sorted); devices with none are absent."""
    return _bound(conn, m.device_roles.c.device_id, m.device_roles.c.role_name, ids)


def _devices_of(conn: Connection, rows: Sequence[Row[Any]]) -> list[Device]:
    ids = [r.id for r in rows]
    groups = groups_of(conn, ids)
    roles = roles_of(conn, ids)
    return [device_of(r, groups.get(r.id, ()), roles.get(r.id, ())) for r in rows]


def _pg_devices(conn: Connection, ids: list[str]) -> list[Device]:
    """PostgreSQL: the devices, each with its groups and roles, in one statement whose ids
    are one array parameter (no statement text that grows with the batch). Group and role
    names never contain a space (``parse_group_name``, ``parse_role_name``), so each list
    comes back as one space-separated string."""
    g, r = m.device_groups.c, m.device_roles.c
    groups = (select(func.string_agg(g.group_name, " ")).where(g.device_id == m.devices.c.id)
              .scalar_subquery())
    roles = (select(func.string_agg(r.role_name, " ")).where(r.device_id == m.devices.c.id)
             .scalar_subquery())
    rows = conn.execute(select(m.devices, groups.label("linked_groups"),
                               roles.label("linked_roles"))
                        .where(m.devices.c.id == any_(bindparam("ids", type_=ARRAY(String))))
                        , {"ids": ids}).all()
    return [device_of(row, tuple(sorted(row.linked_groups.split(" ")))
                      if row.linked_groups else (),
                      tuple(sorted(row.linked_roles.split(" "))) if row.linked_roles else ())
            for row in rows]


def get_devices(rt: Runtime, device_ids: Sequence[str]) -> dict[str, Device]:
    """The registered devices among ``device_ids`` (ids as the store holds them), with
    their groups and their own roles, read in batches (on PostgreSQL one statement per
    batch, elsewhere three indexed ones); unregistered ids are absent from the result."""
    found: dict[str, Device] = {}
    with reading(rt.engine) as conn:
        for i in range(0, len(device_ids), _CHUNK):
            chunk = list(device_ids[i:i + _CHUNK])
            if conn.dialect.name == "postgresql":
                devices = _pg_devices(conn, chunk)
            else:
                rows = conn.execute(select(m.devices).where(m.devices.c.id.in_(chunk))).all()
                devices = _devices_of(conn, rows)
            for device in devices:
                found[device.id] = device
    return found


def list_devices(rt: Runtime, *, group: str | None = None, state: DeviceState | None = None,
                 limit: int = 1000, after: str | None = None) -> list[Device]:
    """Devices ordered by id; ``after`` pages (keyset pagination, stable under inserts)."""
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST}")
    query = select(m.devices).order_by(m.devices.c.id).limit(limit)
    if group is not None:
        query = query.where(m.devices.c.id.in_(
            select(m.device_groups.c.device_id)
            .where(m.device_groups.c.group_name == parse_group_name(group))))
    if state is not None:
        query = query.where(m.devices.c.state == state.value)
    if after is not None:
        query = query.where(m.devices.c.id > parse_device_id(after))
    with reading(rt.engine) as conn:
        rows = conn.execute(query).all()
        return _devices_of(conn, rows)


def set_state(conn: Connection, device_id: str, target: DeviceState, now: int) -> DeviceState:
    """Move a device to ``target`` inside the caller's transaction; returns the old state."""
    row = conn.execute(select(m.devices.c.state).where(m.devices.c.id == device_id)
                       .with_for_update()).first()
    if row is None:
        raise NotFoundError(f"device {device_id!r} is not registered",
                            hint="register it with 'iotsec device add'")
    current = DeviceState(row.state)
    if current is not target:
        current.check_transition(target, device_id)
        conn.execute(update(m.devices).where(m.devices.c.id == device_id)
                     .values(state=target.value, updated_at=now))
    return current
