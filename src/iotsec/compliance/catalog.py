"""The model of a compliance framework: provisions, their requirement level, and what
iotsec can check about each one automatically.

A :class:`Framework` is a published standard (ETSI EN 303 645, NIST IR 8259A, the OWASP IoT
Top 10) as a list of :class:`Provision`\\ s with their exact numbers. A provision's
:class:`Checks` name the evidence that bears on it: fleet audit rules (``audit/...``), facts
iotsec establishes about its own configuration and state (``fact:...``), and scanner rules
(by the rule's standard tag, or by rule id prefix). A provision without checks needs a
person: its status is ``manual`` until someone records an attestation.

Summaries are short paraphrases written for this tool, not the standards' text; read the
standard for the authoritative wording.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "AUDIT_RULE_IDS", "FACT_NAMES", "Category", "Checks", "Framework", "Level", "Provision",
    "Status"
]


class Level(enum.StrEnum):
    """Requirement level where the standard has one (ETSI: M = shall, R = should)."""

    MANDATORY = "M"
    RECOMMENDED = "R"


class Status(enum.StrEnum):
    """What a report says about one provision.

    ``pass``: the evidence shows it is met. ``fail``: the evidence shows it is not.
    ``partial``: part of it is met, or only part of it could be checked. ``manual``: iotsec
    cannot decide it; a person must (with a recorded justification). ``not_applicable``:
    it does not apply to this fleet (with a recorded justification).
    """

    PASS = "pass"  # noqa: S105 (a status, not a password)
    FAIL = "fail"
    PARTIAL = "partial"
    MANUAL = "manual"
    NOT_APPLICABLE = "not_applicable"


#: The fleet audit rules (a contract with ``iotsec.audit``).
AUDIT_RULE_IDS: frozenset[str] = frozenset({
    "audit/ca-expiring", "audit/ca-weak-key", "audit/device-cert-expiring",
    "audit/device-cert-old", "audit/device-weak-key", "audit/revoked-cert-connecting",
    "audit/revoked-ca-active-certs", "audit/shared-certificate", "audit/client-id-conflict",
    "audit/policy-permissive", "audit/policy-misconfigured", "audit/broker-anonymous",
    "audit/broker-plaintext-listener", "audit/broker-crl-missing", "audit/broker-crl-stale",
    "audit/logging-disabled", "audit/firmware-below-counter", "audit/token-no-expiry",
})

#: Facts iotsec establishes about its own configuration and state (see
#: ``iotsec.app.compliance.reports.gather_facts`` for how each is decided).
FACT_NAMES: frozenset[str] = frozenset({
    "identity.private-ca", "identity.device-credentials", "auth.no-default-passwords",
    "auth.brute-force-limit", "api.tls", "keys.custody", "data.at-rest",
    "firmware.ota-repository", "firmware.metadata-fresh", "firmware.anti-rollback",
    "firmware.signed-releases", "monitor.detection",
})

_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,15}$")
_ID = re.compile(r"^[a-z0-9][a-z0-9.\-]{0,40}$")


@dataclass(frozen=True, slots=True)
class Checks:
    """The evidence iotsec evaluates for a provision."""

    audit: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    #: Scanner rule ids or id prefixes ending in ``/`` (``plaintext/``), besides the rules
    #: whose tags name the provision (``etsi:5.5-1``, ``owasp-iot:I2``).
    scan_rules: tuple[str, ...] = ()
    #: Whether a scan report has something to say (by tag or by ``scan_rules``).
    scan: bool = False
    #: The provision's own logic, for the few that are about the report itself (ETSI 4-1).
    special: str | None = None

    def __post_init__(self) -> None:
        unknown = [r for r in self.audit if r not in AUDIT_RULE_IDS]
        unknown += [f for f in self.facts if f not in FACT_NAMES]
        if unknown:
            raise ValueError(f"unknown evidence: {', '.join(unknown)}")

    @property
    def automatic(self) -> bool:
        return bool(self.audit or self.facts or self.scan or self.scan_rules or self.special)


@dataclass(frozen=True, slots=True)
class Category:
    id: str
    title: str


@dataclass(frozen=True, slots=True)
class Provision:
    """One provision (or capability, or item) of a framework.

    ``id`` is what commands and reports use (lower case for NIST capabilities; the printed
    number otherwise); ``number`` is how the standard prints it.
    """

    id: str
    number: str
    title: str
    category: str
    summary: str
    level: Level | None = None
    #: The provision applies only under a condition the standard states (``M C`` / ``R C``);
    #: ``condition`` says which, in short.
    condition: str | None = None
    elements: tuple[str, ...] = ()
    checks: Checks = field(default_factory=Checks)

    def __post_init__(self) -> None:
        if not _ID.match(self.id) and not _NUMBER.match(self.id):
            raise ValueError(f"bad provision id {self.id!r}")
        if not _NUMBER.match(self.number):
            raise ValueError(f"bad provision number {self.number!r}")

    @property
    def conditional(self) -> bool:
        return self.condition is not None

    @property
    def level_text(self) -> str | None:
        if self.level is None:
            return None
        return f"{self.level.value} C" if self.conditional else self.level.value


@dataclass(frozen=True, slots=True)
class Framework:
    id: str
    name: str
    version: str
    reference: str
    categories: tuple[Category, ...]
    provisions: tuple[Provision, ...]
    #: Prefix of the scanner rule tags naming this framework's provisions (``etsi:``).
    scan_tag: str | None = None

    def __post_init__(self) -> None:
        ids = [p.id for p in self.provisions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.id}: duplicate provision ids")
        known = {c.id for c in self.categories}
        stray = [p.id for p in self.provisions if p.category not in known]
        if stray:
            raise ValueError(f"{self.id}: provisions in unknown categories: {stray}")

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.provisions]

    def find(self, text: str) -> Provision | None:
        """The provision with this id or number (case-insensitive), or ``None``."""
        wanted = text.strip().lower()
        for p in self.provisions:
            if p.id.lower() == wanted or p.number.lower() == wanted:
                return p
        return None

    def category(self, category_id: str) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(category_id)

    def in_category(self, category_id: str) -> Sequence[Provision]:
        return [p for p in self.provisions if p.category == category_id]
