"""The profile a device selects itself, written for the store's reader
(:mod:`iotsec.store.reader`): ``device show`` imports no SQLAlchemy for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iotsec.identity.registry import parse_device_id

if TYPE_CHECKING:
    from iotsec.app.reads import Reads

__all__ = ["device_selection"]


def device_selection(rt: Reads, device_id: str) -> str | None:
    """The profile ``device_id`` selects itself, if any."""
    with rt.reading() as reader:
        row = reader.first("SELECT profile FROM device_profiles WHERE device_id = :id",
                           {"id": parse_device_id(device_id)})
    return None if row is None else str(row.profile)
