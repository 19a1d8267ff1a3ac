"""The profile a device selects itself, written for the store's reader
(:mod:`iotsec.store.reader`): ``device show`` imports no SQLAlchemy for it."""

from __future__ import annotations

from iotsec.app.runtime import Runtime
from iotsec.identity.registry import parse_device_id

__all__ = ["device_selection"]


def device_selection(rt: Runtime, device_id: str) -> str | None:
    """The profile ``device_id`` selects itself, if any."""
    with rt.reading() as reader:
        row = reader.first("SELECT profile FROM device_profiles WHERE device_id = :id",
                           {"id": parse_device_id(device_id)})
    return None if row is None else str(row.profile)
