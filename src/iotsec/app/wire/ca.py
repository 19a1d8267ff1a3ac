"""Wire models of the CA hierarchy: the CAs with their states, a rotation, a retirement."""

from __future__ import annotations

from datetime import datetime

from iotsec.app.broker.rollover import CaChange
from iotsec.app.pki.authorities import AuthorityRecord
from iotsec.app.pki.crl import PublishedCrl
from iotsec.app.wire.base import Wire

__all__ = ["AuthorityOut", "CaChangeOut", "CrlOut"]


class AuthorityOut(Wire):
    """A CA of the store. ``state``: active | retiring | retired | expired (past notAfter,
    whatever its stored state)."""

    id: int
    role: str
    parent_id: int | None
    subject: str
    state: str
    not_before: datetime
    not_after: datetime
    key_type: str
    key_label: str
    key_offline: bool
    certificates_issued: int
    state_changed_at: datetime | None

    @classmethod
    def from_domain(cls, a: AuthorityRecord, now: datetime) -> AuthorityOut:
        return cls(id=a.id, role=a.role, parent_id=a.parent_id, subject=a.subject,
                   state=a.shown_state(now), not_before=a.not_before, not_after=a.not_after,
                   key_type=a.key_type, key_label=a.key_label, key_offline=a.key_offline,
                   certificates_issued=a.issued, state_changed_at=a.state_changed_at)


class CaChangeOut(Wire):
    """What a rotation, an import or a retirement changed, and the broker it re-rendered
    (``broker_generation``: ``null`` when no broker directory is configured)."""

    changed: list[AuthorityOut]
    broker_dir: str | None
    broker_generation: int | None
    broker_reloaded: bool

    @classmethod
    def from_domain(cls, c: CaChange, now: datetime) -> CaChangeOut:
        sync = c.broker
        return cls(changed=[AuthorityOut.from_domain(a, now) for a in c.changed],
                   broker_dir=None if sync is None else sync.directory,
                   broker_generation=None if sync is None else sync.generation,
                   broker_reloaded=False if sync is None else sync.reloaded)


class CrlOut(Wire):
    """A published CRL (without its bytes)."""

    number: int
    this_update: datetime
    next_update: datetime

    @classmethod
    def from_domain(cls, crl: PublishedCrl) -> CrlOut:
        return cls(number=crl.number, this_update=crl.this_update,
                   next_update=crl.next_update)
