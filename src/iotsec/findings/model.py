"""The finding model shared by the scanner, the fleet audit, the compliance reports, policy
lint and the zone-policy review.

A :class:`Rule` is a check that can fail (``tls/old-protocol``), with a default severity,
a description and the fix. A :class:`Finding` is one failure of a rule at one
:class:`Location` (an endpoint, a device, a certificate, a policy rule, a line of a zone
policy...), with the evidence that shows it and the fix for this case. Rule ids are SARIF
hierarchical strings (``area/name``); a finding's fingerprint is stable across runs so that
CI systems can track it.

Evidence is a small flat mapping of JSON values; strings that come from the network are
cleaned (control characters escaped) and cut to :data:`MAX_EVIDENCE_TEXT` characters here,
so no writer has to think about it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_EVIDENCE_TEXT", "EvidenceValue", "Finding", "Location", "Rule", "Severity", "clean_text",
    "count_by_severity", "sort_findings", "worst"
]

MAX_EVIDENCE_TEXT = 512
MAX_EVIDENCE_ITEMS = 32

EvidenceValue = str | int | float | bool | None | tuple[str, ...]


class Severity(enum.StrEnum):
    """How bad a finding is. Ordered: ``Severity.HIGH > Severity.MEDIUM``."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    @property
    def sarif_level(self) -> str:
        """SARIF ``result.level``: critical and high are errors, medium a warning."""
        if self.rank >= _RANK[Severity.HIGH]:
            return "error"
        if self is Severity.MEDIUM:
            return "warning"
        return "note"

    @property
    def security_severity(self) -> str:
        """A CVSS-like score in the ``security-severity`` rule property (GitHub code
        scanning maps >= 9.0 to critical, >= 7.0 high, >= 4.0 medium, else low)."""
        return _SCORE[self]


_RANK = {Severity.CRITICAL: 4, Severity.HIGH: 3, Severity.MEDIUM: 2, Severity.LOW: 1,
         Severity.INFO: 0}
_SCORE = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
          Severity.LOW: "3.0", Severity.INFO: "0.0"}


def clean_text(text: str, limit: int = MAX_EVIDENCE_TEXT) -> str:
    """``text`` with control characters shown as escapes, cut to ``limit`` characters."""
    out: list[str] = []
    size = 0
    for ch in text:
        code = ord(ch)
        if ch in "\t" or 0x20 <= code < 0x7F or (code >= 0xA0 and not 0xD800 <= code < 0xE000):
            piece = ch
        elif ch == "\n":
            piece = "\\n"
        elif ch == "\r":
            piece = "\\r"
        else:
            piece = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        size += len(piece)
        if size > limit:
            out.append("...")
            break
        out.append(piece)
    return "".join(out)


def _evidence_value(key: str, value: object) -> EvidenceValue:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list | tuple | frozenset | set):
        items = sorted(value) if isinstance(value, frozenset | set) else list(value)
        if not all(isinstance(v, str) for v in items):
            raise TypeError(f"evidence {key!r}: only lists of strings are allowed")
        return tuple(clean_text(v, 128) for v in items[:MAX_EVIDENCE_ITEMS])
    raise TypeError(f"evidence {key!r}: {type(value).__name__} is not a JSON scalar")


@dataclass(frozen=True, slots=True)
class Rule:
    """A check. ``id`` is ``area/name`` (lower case, digits, ``-``); ``tags`` map it to
    weakness catalogues and standards (``cwe:319``, ``owasp-iot:I2``...)."""

    id: str
    title: str
    severity: Severity
    description: str
    fix: str
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        area, sep, name = self.id.partition("/")
        allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
        if not sep or not area or not name or not set(area) <= allowed \
                or not set(name) <= allowed | {"/"}:
            raise ValueError(f"rule id {self.id!r} is not of the form area/name")

    @property
    def code(self) -> str:
        """The rule's name within its area: ``wildcard-all`` for ``policy/wildcard-all``
        (what policy lint and the zone-policy review print)."""
        return self.id.partition("/")[2]

    def at(self, location: Location, message: str, *,
           evidence: Mapping[str, object] | None = None, severity: Severity | None = None,
           fix: str | None = None) -> Finding:
        """A finding of this rule at ``location``."""
        items = tuple(sorted((k, _evidence_value(k, v)) for k, v in (evidence or {}).items()))
        return Finding(rule=self, location=location, message=message,
                       severity=severity or self.severity, evidence=items,
                       fix=fix or self.fix)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "severity": self.severity.value,
                "description": self.description, "fix": self.fix, "tags": list(self.tags)}


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding is. ``uri`` identifies it in reports: ``tcp://192.0.2.7:8883`` for
    a network service; the audit uses its own schemes (``device:ID``, ``cert:SERIAL``).

    ``index`` is a rule's position in its role (policy lint) and ``line`` a line of the file
    the finding is about (the zone-policy review); both are ``None`` elsewhere.
    """

    uri: str
    kind: str = "endpoint"
    host: str | None = None
    port: int | None = None
    transport: str | None = None
    name: str | None = None
    device: str | None = None
    index: int | None = None
    line: int | None = None

    @classmethod
    def endpoint(cls, host: str, port: int | None, transport: str = "tcp", *,
                 name: str | None = None, device: str | None = None) -> Location:
        """A network service (``tcp://host:port``), or a whole host when ``port`` is None."""
        shown = f"[{host}]" if ":" in host else host
        uri = f"{transport}://{shown}" + (f":{port}" if port is not None else "")
        return cls(uri=uri, kind="endpoint" if port is not None else "host", host=host,
                   port=port, transport=transport if port is not None else None, name=name,
                   device=device)

    @classmethod
    def policy_rule(cls, role: str, index: int | None) -> Location:
        """Rule ``index`` of access-policy role ``role`` (``policy:ROLE#rule:N``), or the
        role as a whole when ``index`` is None (``policy:ROLE``)."""
        uri = f"policy:{role}" + (f"#rule:{index}" if index is not None else "")
        return cls(uri=uri, kind="policy", name=role, index=index)

    @classmethod
    def zone_rule(cls, rule: str | None, line: int | None) -> Location:
        """A place in a zone policy: the rule named ``rule`` at ``line``; with no rule, the
        line alone (a zone), or with neither the policy as a whole."""
        if rule is not None:
            uri = f"zone-policy:rule:{rule}"
        elif line is not None:
            uri = f"zone-policy:line:{line}"
        else:
            uri = "zone-policy:"
        return cls(uri=uri, kind="zone-policy", name=rule, line=line)

    def to_dict(self) -> dict[str, Any]:
        """The location as JSON. ``index`` and ``line`` appear only when set, so an
        endpoint's or a device's dict keeps the keys the published report schemas fix."""
        out: dict[str, Any] = {
            "uri": self.uri, "kind": self.kind, "host": self.host, "port": self.port,
            "transport": self.transport, "name": self.name, "device": self.device}
        if self.index is not None:
            out["index"] = self.index
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class Finding:
    """One failure of ``rule`` at ``location``: what was seen (``message``, ``evidence``),
    how bad it is here (``severity``) and what to do about it here (``fix``)."""

    rule: Rule
    location: Location
    message: str
    severity: Severity
    evidence: tuple[tuple[str, EvidenceValue], ...] = ()
    fix: str = ""

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def key(self) -> tuple[str, str]:
        """(rule id, location uri): what identifies a finding within one report."""
        return (self.rule.id, self.location.uri)

    @property
    def fingerprint(self) -> str:
        """A stable id across runs: the rule and the location, hashed."""
        digest = hashlib.sha256(f"{self.rule.id}\n{self.location.uri}".encode())
        return digest.hexdigest()[:32]

    def evidence_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.evidence}

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.id, "title": self.rule.title, "severity": self.severity.value,
            "target": self.location.uri, "location": self.location.to_dict(),
            "message": self.message, "evidence": self.evidence_dict(), "fix": self.fix,
            "fingerprint": self.fingerprint,
        }


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The highest severity among ``findings`` (``None`` when there are none)."""
    best: Severity | None = None
    for f in findings:
        if best is None or f.severity > best:
            best = f.severity
    return best


def count_by_severity(findings: Sequence[Finding]) -> dict[str, int]:
    """How many of ``findings`` have each severity (every severity present, worst first)."""
    counts = {s.value: 0 for s in Severity}
    for f in findings:
        counts[f.severity.value] += 1
    return counts


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Worst first, then by location and rule: the order every report uses."""
    return sorted(findings, key=lambda f: (-f.severity.rank, f.location.host or "",
                                           f.location.port or 0, f.location.uri, f.rule.id))
