"""What the fleet audit looks at: a snapshot of iotsec's state, as plain values.

The service layer fills a :class:`Snapshot` from the store, the settings and the broker
directory; the checks in :mod:`iotsec.audit.checks` read only the snapshot and
:class:`AuditOptions`, so they are pure and tested without a database. Times are integer
Unix seconds, like the store's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from iotsec.audit.keyinfo import CertKeyFacts, KeyFacts
from iotsec.errors.audit import AuditOptionError
from iotsec.findings.model import Finding

__all__ = ["AuditOptions", "AuthorityFacts", "BrokerFacts", "BrokerListener", "CertFacts",
           "CrlFacts", "DeviceKeyFacts", "EventFacts", "FirmwareFacts", "Snapshot",
           "TokenFacts"]

DAY = 86400


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """Thresholds; :meth:`parse` validates them (an :class:`AuditOptionError` otherwise)."""

    #: A CA certificate expiring within this many days is a finding (critical < 30).
    ca_days: int = 180
    #: A device's newest valid certificate expiring within this many days is a finding.
    cert_days: int = 30
    #: A device certificate older than this (since notBefore) is overdue for rotation.
    max_cert_age: int = 398
    #: The events window: connections, collisions and event recording are judged over it.
    window: timedelta = timedelta(hours=24)
    #: A broker CRL whose nextUpdate is closer than this is stale.
    crl_hours: int = 24
    #: An operator token not used for this many days is a finding.
    token_unused_days: int = 90

    @classmethod
    def parse(cls, *, ca_days: int = 180, cert_days: int = 30, max_cert_age: int = 398,
              window: timedelta = timedelta(hours=24), crl_hours: int = 24,
              token_unused_days: int = 90) -> AuditOptions:
        def bounded(name: str, value: int, low: int, high: int) -> int:
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not low <= value <= high:
                raise AuditOptionError(f"{name} must be a whole number from {low} to {high}, "
                                       f"not {value!r}"[:160],
                                       hint=f"give {name} between {low} and {high}")
            return value

        bounded("--ca-days", ca_days, 1, 3650)
        bounded("--cert-days", cert_days, 1, 3650)
        bounded("--max-cert-age", max_cert_age, 1, 36500)
        bounded("--crl-hours", crl_hours, 1, 24 * 365)
        bounded("--token-unused-days", token_unused_days, 1, 3650)
        if not isinstance(window, timedelta) or \
                not timedelta(minutes=1) <= window <= timedelta(days=366):
            raise AuditOptionError(f"--window must be from 1 minute to 366 days, not {window}",
                                   hint="write it like 24h, 7d or 90m")
        return cls(ca_days=ca_days, cert_days=cert_days, max_cert_age=max_cert_age,
                   window=window, crl_hours=crl_hours, token_unused_days=token_unused_days)

    def to_dict(self) -> dict[str, int]:
        return {"ca_days": self.ca_days, "cert_days": self.cert_days,
                "max_cert_age": self.max_cert_age,
                "window_seconds": int(self.window.total_seconds()),
                "crl_hours": self.crl_hours, "token_unused_days": self.token_unused_days}


@dataclass(frozen=True, slots=True)
class AuthorityFacts:
    id: int
    role: str  # root | issuing
    subject: str
    not_after: int
    active: bool
    serial: str
    #: None when the certificate could not be read (reported as such).
    facts: CertKeyFacts | None
    #: When the CA's own certificate was revoked by its parent (a revoked row in the store).
    revoked_at: int | None = None
    #: active | retiring (a rollover's overlap) | retired.
    state: str = "active"

    @property
    def label(self) -> str:
        return self.role if self.active else f"{self.role}-{self.id}"


class CertFacts(NamedTuple):
    """A certificate as the checks see it (a named tuple: the audit builds one per
    certificate of the fleet, and tuples are the cheapest immutable records)."""

    serial: str
    device_id: str | None
    authority_id: int
    kind: str  # device | server
    not_before: int
    not_after: int
    revoked_at: int | None
    #: Read for the certificates in use only (valid now).
    facts: CertKeyFacts | None = None

    def valid_at(self, moment: int) -> bool:
        return self.not_before <= moment < self.not_after and \
            (self.revoked_at is None or self.revoked_at > moment)

    def may_be_valid_at(self, moment: int) -> bool:
        """Valid at ``moment``, or revoked in that very second (times are whole seconds: a
        use in the second of the revocation may have preceded it)."""
        return self.not_before <= moment < self.not_after and \
            (self.revoked_at is None or self.revoked_at >= moment)

    def revoked_by(self, moment: int) -> bool:
        return self.revoked_at is not None and self.revoked_at <= moment

    def revoked_before(self, moment: int) -> bool:
        """Revoked strictly before ``moment`` (times are whole seconds: a use in the very
        second of the revocation may have preceded it)."""
        return self.revoked_at is not None and self.revoked_at < moment


@dataclass(frozen=True, slots=True)
class DeviceKeyFacts:
    kid: str
    device_id: str
    algorithm: str
    key: KeyFacts | None
    spki: bytes


class EventFacts(NamedTuple):
    at: int
    kind: str
    outcome: str
    actor: str | None
    source: str | None
    detail: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class TokenFacts:
    id: str
    name: str
    scope: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class FirmwareFacts:
    device_id: str
    product: str | None
    version: str
    #: The counter of the version the device runs (from the product's releases), or its
    #: recorded anti-rollback counter when the version is not a known release.
    running_counter: int
    #: The channel the device follows (its latest campaign's, or its ``channel`` attribute);
    #: None when unknown.
    channel: str | None


@dataclass(frozen=True, slots=True)
class BrokerListener:
    port: int
    bind: str | None  # None: every interface
    socket: str | None = None  # a Unix socket listener (port 0)
    tls: bool = False
    require_certificate: bool = False
    crlfile: str | None = None
    line: int = 0

    @property
    def network(self) -> bool:
        return self.socket is None


@dataclass(frozen=True, slots=True)
class CrlFacts:
    issuer: str
    number: int | None
    this_update: int
    next_update: int | None
    #: The broker's own CRL (certificateHold entries for disabled devices): a scope of its
    #: own, whose numbers are not the published CRL's.
    broker_scope: bool = False


@dataclass(frozen=True, slots=True)
class BrokerFacts:
    directory: str
    #: Set when the configuration could not be read: every broker check reports it.
    problem: str | None = None
    allow_anonymous: bool = False
    per_listener_anonymous: tuple[int, ...] = ()  # listeners allowing anonymous clients
    listeners: tuple[BrokerListener, ...] = ()
    #: CRLs in the TLS listeners' crlfile (one per CA), or None when it cannot be read.
    crls: tuple[CrlFacts, ...] | None = None
    crl_problem: str | None = None
    log_file: str | None = None
    connection_messages: bool = True
    log_size: int = 0
    #: Bytes of the log already turned into events (the ingest state), None: never ingested.
    ingested_offset: int | None = None
    #: When the log was last ingested (the ingest state file's modification time).
    ingested_at: int | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: int
    authorities: Sequence[AuthorityFacts]
    #: Device ids by state.
    device_states: Mapping[str, str]
    #: Certificates valid now, with their key facts.
    live_certs: Sequence[CertFacts]
    #: Expired or revoked certificates of the devices that matter (active devices without a
    #: valid certificate; devices seen connecting in the window), without key facts.
    past_certs: Sequence[CertFacts]
    device_keys: Sequence[DeviceKeyFacts]
    #: Connection, collision and device-token events in the window, oldest first.
    events: Sequence[EventFacts]
    #: Number of events of any kind recorded in the window.
    events_in_window: int
    tokens: Sequence[TokenFacts]
    firmware: Sequence[FirmwareFacts]
    #: Highest security counter of each (product, channel)'s current release.
    channel_counters: Mapping[tuple[str, str], int]
    #: The policy lint's findings (:func:`iotsec.access.lint.lint`); None when the policy
    #: could not be loaded.
    lint: Sequence[Finding] | None
    #: Number of roles in the policy (what the lint examined).
    policy_roles: int
    broker: BrokerFacts | None
    #: The store's current CRL number per authority id.
    crl_numbers: Mapping[int, int] = field(default_factory=dict)
    #: Certificates revoked after this time, per authority id (to tell whether the broker's
    #: CRL misses revocations): the newest revocation time in the store.
    last_revocation: Mapping[int, int] = field(default_factory=dict)
    _memo: dict[str, dict[str, list[CertFacts]]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    @property
    def active_devices(self) -> list[str]:
        return [d for d, s in self.device_states.items() if s == "active"]

    def _by_device(self, name: str, certs: Sequence[CertFacts]) -> dict[str, list[CertFacts]]:
        found = self._memo.get(name)
        if found is None:
            found = {}
            for c in certs:
                if c.device_id is not None and c.kind == "device":
                    found.setdefault(c.device_id, []).append(c)
            self._memo[name] = found
        return found

    def live_by_device(self) -> Mapping[str, list[CertFacts]]:
        """Device certificates valid now, by device (computed once)."""
        return self._by_device("live", self.live_certs)

    def past_by_device(self) -> Mapping[str, list[CertFacts]]:
        """Expired or revoked device certificates, by device (computed once)."""
        return self._by_device("past", self.past_certs)

    @staticmethod
    def days(seconds: int) -> float:
        return round(seconds / DAY, 1)
