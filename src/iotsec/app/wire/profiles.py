"""Wire models of certificate profiles: a profile, what selects it, and a selection."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from iotsec.app.wire.base import Wire

if TYPE_CHECKING:
    from iotsec.app.pki.profiles import ProfileUsage, StoredProfile

__all__ = ["ProfileOut", "ProfileSelectionOut", "ProfileUsageOut"]


class ProfileUsageOut(Wire):
    """How many devices, groups and enrolment templates select a profile."""

    devices: int
    groups: int
    templates: int


class ProfileOut(Wire):
    """A certificate profile. ``key_types`` empty: every key type iotsec accepts in a CSR.
    ``dns_from``: DNS name templates (``{device_id}`` is the device id) and ``attr:NAME``
    (the device attribute NAME). ``no_revocation``: certificates carry RFC 9608
    noRevAvail and no CRL or OCSP pointers. ``usage`` only when one profile is shown."""

    name: str
    builtin: bool
    validity_days: int
    key_types: list[str]
    ekus: list[str]
    dns_from: list[str]
    no_revocation: bool
    created_at: datetime | None
    usage: ProfileUsageOut | None = None

    @classmethod
    def from_domain(cls, stored: StoredProfile, usage: ProfileUsage | None = None
                    ) -> ProfileOut:
        # Deferred for start-up time: only a command that shows a profile needs the EKU
        # names (and cryptography, which the profile code imports).
        from iotsec.pki.profiles import eku_names

        p = stored.profile
        return cls(name=p.name, builtin=p.builtin, validity_days=p.validity_days,
                   key_types=list(p.key_types), ekus=eku_names(p.extended_key_usage),
                   dns_from=list(p.dns_from), no_revocation=p.no_revocation,
                   created_at=stored.created_at,
                   usage=None if usage is None else ProfileUsageOut(
                       devices=usage.devices, groups=usage.groups, templates=usage.templates))


class ProfileSelectionOut(Wire):
    """The profile a device or a group now selects (``null``: none of its own)."""

    kind: str
    name: str
    profile: str | None
