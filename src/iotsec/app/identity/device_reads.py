"""The read of one device, as every path shows it (``device show``, the API, the services
that act on a device), written for the store's reader (:mod:`iotsec.store.reader`): a command
that only shows a device imports no SQLAlchemy."""

from __future__ import annotations

import json
from typing import Any

from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.identity.registry import Device, DeviceState, parse_device_id
from iotsec.timeutil import from_ts

__all__ = ["device_of", "get_device"]

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


def get_device(rt: Runtime, device_id: str) -> Device:
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
