"""Request and response bodies (pydantic): what comes from outside is validated here."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from iotsec.app.pki.certs import CertificateRecord
from iotsec.identity.registry import Device

#: The largest integer the API accepts anywhere (a signed 64-bit integer, the widest column
#: of the store): a larger one would overflow in the database driver, so it is refused as
#: invalid input before it gets there.
MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
#: The largest id of a row keyed by an ``Integer`` column (campaigns, releases): a signed
#: 32-bit integer on PostgreSQL.
MAX_INT32 = 2**31 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceIn(Strict):
    id: str = Field(max_length=512)
    groups: list[str] = Field(default_factory=list, max_length=64)
    attributes: dict[str, str] = Field(default_factory=dict)


class DeviceOut(BaseModel):
    id: str
    state: str
    groups: list[str]
    attributes: dict[str, str]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(id=d.id, state=d.state.value, groups=list(d.groups),
                   attributes=dict(d.attributes), created_at=d.created_at,
                   updated_at=d.updated_at)


class CertificateOut(BaseModel):
    serial: str
    device_id: str | None
    subject: str
    kind: str
    profile: str
    status: str
    not_before: datetime
    not_after: datetime
    sha256: str
    revoked_at: datetime | None
    revocation_reason: str | None
    replaced_by: str | None
    pem: str | None = None

    @classmethod
    def of(cls, c: CertificateRecord, now: datetime, *, with_pem: bool = False) -> CertificateOut:
        return cls(serial=c.serial, device_id=c.device_id, subject=c.subject, kind=c.kind,
                   profile=c.profile, status=c.status(now), not_before=c.not_before,
                   not_after=c.not_after, sha256=c.sha256, revoked_at=c.revoked_at,
                   revocation_reason=c.revocation_reason.name
                   if c.revocation_reason is not None else None,
                   replaced_by=c.replaced_by, pem=c.pem if with_pem else None)


class DeviceDetailOut(DeviceOut):
    certificates: list[CertificateOut]


class IssueIn(Strict):
    csr: str = Field(description="PEM certificate signing request", max_length=70_000)
    days: int | None = Field(default=None, ge=1, le=36_500)
    allow_shared_key: bool = Field(
        default=False, description="issue even if another identity's valid certificate "
        "certifies the same key (recorded as a cert.shared-key event)")


class KeygenIn(Strict):
    pkcs12_passphrase: str = Field(min_length=8, max_length=1024)
    key_type: str = "ecdsa-p256"
    days: int | None = Field(default=None, ge=1, le=36_500)


class KeygenOut(BaseModel):
    certificate: CertificateOut
    key_pem: str
    pkcs12_base64: str
    chain_pem: str


class RevokeIn(Strict):
    reason: str = Field(default="unspecified", max_length=64)


class RevokedOut(BaseModel):
    revoked: list[str]
    reason: str


class RenewIn(Strict):
    csr: str = Field(max_length=70_000)
    days: int | None = Field(default=None, ge=1, le=36_500)
    grace: str | None = Field(default=None, max_length=16, description="e.g. 7d")
    allow_shared_key: bool = Field(
        default=False, description="as for issuing: accept a key another identity holds")
