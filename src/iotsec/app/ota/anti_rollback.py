"""The server-side anti-rollback record of every device: the version it last reported, and
the security counter and lowest version its confirmed installs allow from then on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from iotsec.app.ota.releases import ReleaseInfo, product_releases
from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.firmware import campaign as core
from iotsec.firmware.image import ImageVersion
from iotsec.identity.registry import parse_device_id
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts

__all__ = ["FirmwareRecord", "check_and_record", "firmware_record"]

_ZERO = "0.0.0+0"


@dataclass(frozen=True)
class FirmwareRecord:
    device_id: str
    product: str | None
    version: str
    security_counter: int
    min_version: str
    updated_at: datetime


def _counter_of(known: list[ReleaseInfo], version: ImageVersion) -> int | None:
    counters = [r.security_counter or 0 for r in known if r.version == version]
    return max(counters) if counters else None


def check_and_record(conn: Connection, device_id: str, product: str, version: ImageVersion,
                     confirmed: bool, now: int) -> None:
    """Check the reported running version against the device's record, then record it
    (raising the counter only for a confirmed install)."""
    known = product_releases(conn, product)
    claimed = _counter_of(known, version)
    f = m.ota_device_firmware.c
    record = conn.execute(select(m.ota_device_firmware).where(f.device_id == device_id)
                          .with_for_update()).first()
    if record is not None:
        core.check_running(record.security_counter, ImageVersion.parse(record.min_version),
                           version, claimed)
    counter = record.security_counter if record is not None else 0
    min_version = record.min_version if record is not None else _ZERO
    if confirmed and claimed is not None and claimed > counter:
        counter = claimed
        allowed = [r.version for r in known if (r.security_counter or 0) >= counter]
        min_version = str(min(allowed)) if allowed else str(version)
    values = {"product": product, "version": str(version), "security_counter": counter,
              "min_version": min_version, "updated_at": now}
    if record is None:
        conn.execute(insert(m.ota_device_firmware).values(device_id=device_id, **values))
    else:
        conn.execute(update(m.ota_device_firmware).where(f.device_id == device_id)
                     .values(**values))


def firmware_record(rt: Runtime, device_id: str) -> FirmwareRecord:
    """The device's anti-rollback record, or NotFoundError before its first report."""
    device_id = parse_device_id(device_id)
    with reading(rt.engine) as conn:
        r = conn.execute(select(m.ota_device_firmware).where(
            m.ota_device_firmware.c.device_id == device_id)).first()
    if r is None:
        raise NotFoundError(f"no firmware reported by device {device_id!r} yet")
    return FirmwareRecord(r.device_id, r.product, r.version, r.security_counter,
                          r.min_version, from_ts(r.updated_at))
