"""One device as ``iotsec device show`` and ``GET /v1/devices/{id}`` give it: the device,
the certificates it holds and the certificate profile it selects itself, read on any
:class:`~iotsec.app.reads.Reads` (the runtime, or a store opened on its driver)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from iotsec.app.identity.device_reads import get_device
from iotsec.app.pki.cert_records import CertificateRecord, list_certificates
from iotsec.app.pki.profile_reads import device_selection
from iotsec.identity.registry import Device

if TYPE_CHECKING:
    from iotsec.app.reads import Reads

__all__ = ["DeviceDetail", "device_detail"]


class DeviceDetail(NamedTuple):
    device: Device
    certificates: list[CertificateRecord]
    #: The profile the device selects itself (None: its groups' or the next rule's decides).
    profile: str | None
    #: When it was read (a certificate's status depends on it).
    now: datetime


def device_detail(reads: Reads, device_id: str) -> DeviceDetail:
    """The registered device ``device_id`` with its certificates and profile, or
    NotFoundError."""
    device = get_device(reads, device_id)
    return DeviceDetail(device, list_certificates(reads, device_id=device.id),
                        device_selection(reads, device.id), reads.now())
