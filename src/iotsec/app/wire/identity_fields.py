"""The JSON shapes of a certificate and of a device as plain dicts, the fields of their
models (:class:`~iotsec.app.wire.identity.CertificateOut`, ``DeviceOut`` and
``DeviceDetailOut``, which are built from them): the API's issuance fast path writes a
certificate without building a model, and ``iotsec cert list`` and ``device show`` print
them without pydantic. Times are ISO 8601 in UTC with a ``Z``, as the models write them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from iotsec.app.pki.cert_records import CertificateRecord
    from iotsec.identity.registry import Device

__all__ = ["certificate_fields", "device_detail_fields", "device_fields", "iso"]


def iso(moment: datetime | None) -> str | None:
    """``moment`` as the wire models write a time (None stays None)."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def certificate_fields(c: CertificateRecord, now: datetime, *,
                       with_pem: bool = False) -> dict[str, Any]:
    """The fields of ``CertificateOut`` (``pem`` only ``with_pem``)."""
    return {"serial": c.serial, "device_id": c.device_id, "subject": c.subject,
            "kind": c.kind, "profile": c.profile, "status": c.status(now),
            "not_before": iso(c.not_before), "not_after": iso(c.not_after),
            "sha256": c.sha256, "revoked_at": iso(c.revoked_at),
            "revocation_reason": None if c.revocation_reason is None
            else c.revocation_reason.name,
            "replaced_by": c.replaced_by, "pem": c.pem if with_pem else None}


def device_fields(d: Device) -> dict[str, Any]:
    """The fields of ``DeviceOut``."""
    return {"id": d.id, "state": d.state.value, "groups": list(d.groups),
            "roles": list(d.roles), "attributes": dict(d.attributes),
            "created_at": iso(d.created_at), "updated_at": iso(d.updated_at)}


def device_detail_fields(d: Device, held: Sequence[CertificateRecord], now: datetime,
                         profile: str | None = None) -> dict[str, Any]:
    """The fields of ``DeviceDetailOut``: the device, the certificates it holds and the
    profile it selects itself."""
    return {**device_fields(d), "certificates": [certificate_fields(c, now) for c in held],
            "profile": profile}
