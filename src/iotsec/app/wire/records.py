"""Wire models of records kept beside the fleet: compliance attestations and the keys in
custody."""

from __future__ import annotations

from datetime import datetime

from iotsec.app.custody.keys import KeyEntry
from iotsec.app.wire.base import Wire
from iotsec.compliance.evidence import Attestation

__all__ = ["AttestationOut", "KeyEntryOut"]


class AttestationOut(Wire):
    """One version of a person's statement about a provision."""

    framework: str
    provision: str
    version: int
    status: str
    note: str
    actor: str
    at: datetime

    @classmethod
    def from_domain(cls, a: Attestation) -> AttestationOut:
        return cls(framework=a.framework, provision=a.provision, version=a.version,
                   status=a.status.value, note=a.note, actor=a.actor, at=a.at)


class KeyEntryOut(Wire):
    """A key in custody (``extractable`` is known for token keys only)."""

    label: str
    purpose: str
    backend: str
    type: str
    state: str
    extractable: bool | None

    @classmethod
    def from_domain(cls, e: KeyEntry) -> KeyEntryOut:
        return cls(label=e.label, purpose=e.purpose, backend=e.backend, type=e.key_type,
                   state=e.state, extractable=e.extractable)
