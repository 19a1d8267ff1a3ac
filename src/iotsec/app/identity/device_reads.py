"""The reads of devices written for the store's reader (:mod:`iotsec.store.reader`), so that
a command that only shows a device or decides for one imports no SQLAlchemy: the read of one
device, as every path shows it (``device show``, the API, the services that act on a
device), and the lean registry entries decisions read in batches (:func:`decision_entries`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from iotsec.access.policy import Identity
from iotsec.errors import NotFoundError
from iotsec.identity.registry import Device, DeviceState, parse_device_id
from iotsec.store.reader import Reader
from iotsec.timeutil import from_ts

if TYPE_CHECKING:
    # Annotations only: the decision of iotsec.app.access.decide reads on a reader, in a
    # command that starts without the runtime and its settings model.
    from iotsec.app.reads import Reads
    from iotsec.app.runtime import Runtime

__all__ = ["PART", "DecisionEntry", "decision_entries", "device_of", "entry_of", "entry_parts",
           "get_device"]

_DEVICE = ("SELECT id, state, attributes, created_at, updated_at FROM devices "
           "WHERE id = :id")
_GROUPS = "SELECT group_name FROM device_groups WHERE device_id = :id"
_ROLES = "SELECT role_name FROM device_roles WHERE device_id = :id"


def device_of(r: Any, groups: tuple[str, ...], roles: tuple[str, ...]) -> Device:
    """The device a ``devices`` row holds (a row of SQLAlchemy's or of the reader's), with
    its groups and its own roles."""
    return Device(id=r.id, state=DeviceState(r.state), groups=groups,
                  attributes=json.loads(r.attributes), created_at=from_ts(r.created_at),
                  updated_at=from_ts(r.updated_at), roles=roles)


def get_device(rt: Reads, device_id: str) -> Device:
    """One registered device with its groups and roles (sorted), or NotFoundError."""
    device_id = parse_device_id(device_id)
    with rt.reading() as reader:
        row = reader.first(_DEVICE, {"id": device_id})
        if row is None:
            raise NotFoundError(f"device {device_id!r} is not registered",
                                hint="register it with 'iotsec device add'")
        # Sorted here, as the batch reads sort them (not by the database's collation).
        groups = tuple(sorted(r.group_name for r in reader.rows(_GROUPS, {"id": device_id})))
        roles = tuple(sorted(r.role_name for r in reader.rows(_ROLES, {"id": device_id})))
    return device_of(row, groups, roles)


class DecisionEntry(NamedTuple):
    """What a decision needs of a registered device: its identity as the registry describes
    it (no certificate: ``cert_serial`` is None) and its state. Built once when the device is
    read, so that a decision builds no identity of its own, and kept by the decisions'
    registry cache (two objects per device rather than a device and an identity)."""

    identity: Identity
    state: DeviceState


def entry_of(device: Device) -> DecisionEntry:
    """The decision entry of a device read in full."""
    return DecisionEntry(Identity(device.id, device.groups, device.attributes, device.id,
                                  None, device.roles), device.state)


#: Ids per statement of :func:`decision_entries`.
_CHUNK = 2000
#: Each device's state and attributes with its groups and its own roles as space-separated
#: lists (names never contain a space: ``parse_group_name``, ``parse_role_name``), all on
#: the device's row: the database keeps ``group_names`` and ``role_names`` equal to the
#: links (migration 0028, ADR 0041), so the server reads one row per device. The ids are
#: one parameter (an array on PostgreSQL, a JSON array on SQLite), so the statement's text
#: does not grow with the batch.
_ENTRIES = "SELECT id, state, attributes, group_names, role_names FROM devices WHERE {ids}"
_PG_ENTRIES = _ENTRIES.format(ids="id = ANY(:ids)")
_SQLITE_ENTRIES = _ENTRIES.format(ids="id IN (SELECT value FROM json_each(:ids))")
#: Distinct texts remembered by each of :func:`decision_entries`' parse caches before it is
#: emptied (a fleet repeats a few attribute sets and group and role lists).
_TEXTS = 4096
_STATES = {state.value: state for state in DeviceState}
_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})
_attribute_sets: dict[str, Mapping[str, str]] = {}
_name_lists: dict[str | None, tuple[str, ...]] = {None: (), "": ()}


def _attributes(text: str) -> Mapping[str, str]:
    """The attributes a row's JSON text holds, read-only: one mapping per distinct text,
    shared by the entries that have it."""
    found = _attribute_sets.get(text)
    if found is None:
        parsed = json.loads(text)
        found = MappingProxyType(parsed) if parsed else _NO_ATTRIBUTES
        if len(_attribute_sets) >= _TEXTS:
            _attribute_sets.clear()
        _attribute_sets[text] = found
    return found


def _names(text: str | None) -> tuple[str, ...]:
    """A space-separated list of group or role names, sorted (here, not by the database's
    collation)."""
    found = _name_lists.get(text)
    if found is None:
        assert text is not None  # None is always known
        found = tuple(sorted(text.split(" ")))
        if len(_name_lists) >= _TEXTS:
            _name_lists.clear()
            _name_lists.update({None: (), "": ()})
        _name_lists[text] = found
    return found


#: Rows taken at a time by :func:`entry_parts`: the first decisions start after this many
#: rows have come, while the server reads the statement's next ones.
PART = 50


def entry_parts(reader: Reader, device_ids: Sequence[str], part: int = PART
                ) -> Iterator[dict[str, DecisionEntry]]:
    """What a decision needs of each registered device among ``device_ids`` (ids as the
    store holds them), one statement per 2,000 ids, given ``part`` entries at a time as the
    rows arrive (:meth:`~iotsec.store.reader.Reader.tuple_chunks`: on PostgreSQL the
    server goes on reading the next rows meanwhile). Unregistered ids are absent.

    The attribute sets and the group and role lists are parsed once per distinct text, since
    a fleet repeats a few of them on every device."""
    states, attributes, names = _STATES, _attributes, _names
    entry = DecisionEntry
    postgres = reader.postgres
    sql = _PG_ENTRIES if postgres else _SQLITE_ENTRIES
    for i in range(0, len(device_ids), _CHUNK):
        chunk = sorted(device_ids[i:i + _CHUNK])
        for rows in reader.tuple_chunks(sql, {"ids": chunk if postgres else json.dumps(chunk)},
                                        part):
            # Positional: the hot loop of a first decision (Identity's field order).
            yield {device_id: entry(Identity(device_id, names(group_names),
                                             attributes(attrs), device_id, None,
                                             names(role_names)), states[state])
                   for device_id, state, attrs, group_names, role_names in rows}


def decision_entries(rt: Runtime, device_ids: Sequence[str]) -> dict[str, DecisionEntry]:
    """What a decision needs of each registered device among ``device_ids`` (ids as the
    store holds them): its state, and its identity (groups, attributes (read-only) and own
    roles), read with one statement per 2,000 ids in one read transaction. Unregistered ids
    are absent."""
    found: dict[str, DecisionEntry] = {}
    with rt.reading() as reader:
        for part in entry_parts(reader, device_ids, _CHUNK):
            found.update(part)
    return found
