"""Wire models of enrolment: enrolment secrets, provisioning templates and claim CAs."""

from __future__ import annotations

from datetime import datetime

from iotsec.app.enrol.claims import ClaimCa
from iotsec.app.enrol.secrets import SecretInfo
from iotsec.app.wire.base import Wire
from iotsec.identity.enrolment import Template

__all__ = ["ClaimCaOut", "RemovedOut", "SecretOut", "TemplateOut"]


class SecretOut(Wire):
    """An enrolment secret; ``secret`` only in the answer that created it (it is stored
    hashed and never shown again)."""

    id: str
    device_id: str | None
    template: str | None
    state: str
    uses_total: int
    uses_left: int
    expires_at: datetime
    created_at: datetime
    revoked_at: datetime | None
    secret: str | None = None

    @classmethod
    def from_domain(cls, s: SecretInfo, secret: str | None = None) -> SecretOut:
        return cls(id=s.id, device_id=s.device_id, template=s.template, state=s.state.value,
                   uses_total=s.uses_total, uses_left=s.uses_left, expires_at=s.expires_at,
                   created_at=s.created_at, revoked_at=s.revoked_at, secret=secret)


class TemplateOut(Wire):
    """A provisioning template: what a device enrolling under it becomes."""

    name: str
    groups: list[str]
    roles: list[str]
    attributes: dict[str, str]
    id_from: str
    require_approval: bool
    profile: str
    created_at: datetime | None

    @classmethod
    def from_domain(cls, t: Template) -> TemplateOut:
        return cls(name=t.name, groups=list(t.groups), roles=list(t.roles),
                   attributes=dict(t.attributes), id_from=t.id_from.value,
                   require_approval=t.require_approval, profile=t.profile,
                   created_at=t.created_at)


class ClaimCaOut(Wire):
    """A claim CA: a manufacturer's CA whose certificates may each enrol once.
    ``allow_list`` is the number of entries of its allow list (``null``: none, every
    certificate it issued may claim)."""

    name: str
    subject: str
    fingerprint: str
    not_after: datetime
    template: str
    allow_list: int | None
    hook_url: str | None
    created_at: datetime
    pem: str

    @classmethod
    def from_domain(cls, ca: ClaimCa) -> ClaimCaOut:
        cert = ca.certificate
        return cls(name=ca.name, subject=cert.subject.rfc4514_string(),
                   fingerprint=ca.fingerprint, not_after=cert.not_valid_after_utc,
                   template=ca.template, allow_list=None if ca.allow is None else len(ca.allow),
                   hook_url=ca.hook_url, created_at=ca.created_at,
                   pem=ca.pem)


class RemovedOut(Wire):
    """What a removal removed: its kind (``template``, ``claim-ca``, ``profile``) and name."""

    kind: str
    name: str
