"""Detection rules as policy-as-code: a YAML (or JSON) document, validated with the line of
every problem, and the built-in default rule set.

The parser is bounded: the document is capped at :data:`MAX_RULES_BYTES` before it is
parsed, anchors and aliases are refused (no expansion bombs), nesting is capped, duplicate
keys are errors, and at most :data:`MAX_RULES` rules are accepted. Pure: bytes in, a
:class:`RuleSet` or a :class:`~iotsec.errors.DetectionRuleError` out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iotsec import yamldoc
from iotsec.errors import DetectionRuleError, InputTooLargeError
from iotsec.findings.model import Severity

__all__ = [
    "DEFAULT_RULES", "MAX_RULES", "MAX_RULES_BYTES", "Action", "AuditAction", "BaselineSpec",
    "Kind", "Per", "Rule", "RuleSet", "default_rules", "parse_rules",
]

MAX_RULES_BYTES = 256 * 1024
MAX_RULES = 256
_MAX_DEPTH = 8
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


class Kind(enum.StrEnum):
    AUTHN_FAILURES = "authn-failures"
    AUTHZ_DENIALS = "authz-denials"
    MESSAGE_RATE = "message-rate"
    MESSAGE_SIZE = "message-size"
    NEW_NETWORK = "new-source-network"
    DISCONNECT_STORM = "disconnect-storm"
    CERT_TWO_PLACES = "certificate-two-places"
    CLIENT_ID_CONFLICT = "client-id-conflict"
    UNUSUAL_TOPIC = "unusual-topic"
    SILENT = "heartbeat-silence"


class Per(enum.StrEnum):
    DEVICE = "device"
    SOURCE = "source"
    FLEET = "fleet"


class Action(enum.StrEnum):
    NOTIFY = "notify"
    DISABLE = "disable"
    REVOKE = "revoke"
    QUARANTINE = "quarantine"

    @property
    def automatic(self) -> bool:
        """Whether the action changes a device (everything but the alert itself)."""
        return self is not Action.NOTIFY


#: Who a rule may count per, the first being the default.
_PER: dict[Kind, tuple[Per, ...]] = {
    Kind.AUTHN_FAILURES: (Per.SOURCE, Per.DEVICE),
    Kind.AUTHZ_DENIALS: (Per.DEVICE, Per.SOURCE),
    Kind.MESSAGE_RATE: (Per.DEVICE,),
    Kind.MESSAGE_SIZE: (Per.DEVICE,),
    Kind.NEW_NETWORK: (Per.DEVICE,),
    Kind.DISCONNECT_STORM: (Per.FLEET, Per.DEVICE),
    Kind.CERT_TWO_PLACES: (Per.DEVICE,),
    Kind.CLIENT_ID_CONFLICT: (Per.DEVICE,),
    Kind.UNUSUAL_TOPIC: (Per.DEVICE,),
    Kind.SILENT: (Per.DEVICE,),
}
#: Kinds whose detection is a single event (no threshold): they learn for ``learn``
#: seconds after a device is first seen instead.
_LEARNING = (Kind.NEW_NETWORK, Kind.UNUSUAL_TOPIC)
_NO_THRESHOLD = (*_LEARNING, Kind.CERT_TWO_PLACES)
#: Kinds whose evidence an attacker can produce in a victim's name without holding the
#: victim's credentials: a failed authentication carries whatever identity the client
#: claimed, a take-over of a client id is made by the second client, and a device that is
#: knocked off the network goes silent or disconnects. Acting on the named device would let
#: an attacker switch security off for it; these rules may only notify.
_CLAIMED_IDENTITY = (Kind.AUTHN_FAILURES, Kind.CLIENT_ID_CONFLICT, Kind.DISCONNECT_STORM,
                     Kind.SILENT)


class _BaselineDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    deviations: float = Field(default=4.0, gt=0, le=100)
    warmup: int = Field(default=10, ge=1, le=10_000)
    floor: float = Field(ge=0, le=1e12)


class _RuleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=48)
    kind: str = Field(max_length=48)
    per: str | None = Field(default=None, max_length=16)
    window: int = Field(default=60, ge=1, le=86_400)
    threshold: float | None = Field(default=None, ge=0, le=1e12)
    baseline: _BaselineDoc | None = None
    learn: int = Field(default=86_400, ge=0, le=90 * 86_400)
    severity: Literal["critical", "high", "medium", "low", "info"] = "medium"
    action: Literal["notify", "disable", "revoke", "quarantine"] = "notify"
    dry_run: bool = False
    enabled: bool = True
    suggested: str | None = Field(default=None, max_length=1024)


class _AuditDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    finding: str = Field(max_length=64, pattern=r"^audit/[a-z0-9][a-z0-9-]{0,56}$")
    action: Literal["notify", "disable", "revoke", "quarantine"] = "notify"
    dry_run: bool = False


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(default=1, ge=1, le=1)
    max_automatic_actions: int = Field(default=5, ge=0, le=1000)
    rules: list[_RuleDoc] = Field(default_factory=list, max_length=MAX_RULES)
    audit: list[_AuditDoc] = Field(default_factory=list, max_length=MAX_RULES)


#: Audit findings whose evidence someone else can produce in a device's name (a client id
#: is whatever the client claims): like the detection kinds of that sort, they may only
#: notify.
_CLAIMED_FINDINGS = frozenset({"audit/client-id-conflict"})


@dataclass(frozen=True, slots=True)
class AuditAction:
    """The mitigation bound to an audit finding (``audit/...``), run on the device the
    finding names when the scheduled audit raises it as a new alert."""

    finding: str
    action: Action
    dry_run: bool


@dataclass(frozen=True, slots=True)
class BaselineSpec:
    """A threshold relative to what the subject usually does: ``mean + deviations * std``
    of its own history (an exponentially weighted mean and deviation), never below
    ``floor``; until ``warmup`` observations are learnt, ``floor`` alone."""

    deviations: float
    warmup: int
    floor: float


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: Kind
    per: Per
    window: int  # seconds
    threshold: float | None
    baseline: BaselineSpec | None
    learn: int  # seconds of learning after a device is first seen (learning kinds)
    severity: Severity
    action: Action
    dry_run: bool
    enabled: bool
    suggested: str | None

    def limit(self, mean: float, var: float, n: int) -> float:
        """The value above which the rule fires, given the subject's baseline."""
        if self.baseline is None:
            return self.threshold if self.threshold is not None else 0.0
        if n < self.baseline.warmup:
            return self.baseline.floor
        spread: float = max(var, 0.0) ** 0.5
        return max(self.baseline.floor, mean + self.baseline.deviations * spread)


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    #: Automatic (non-notify) actions allowed fleet-wide per hour; beyond it the detector
    #: records the action as refused and raises an alert instead.
    max_automatic_actions: int
    source: str  # the document as written
    audit: tuple[AuditAction, ...] = ()

    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def for_finding(self, finding: str) -> AuditAction | None:
        return next((a for a in self.audit if a.finding == finding), None)


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    return yamldoc.load(text, error=DetectionRuleError, max_depth=_MAX_DEPTH,
                        write_out="write each rule out in full")


def _rule(doc: _RuleDoc, at: int | str) -> Rule:
    def bad(message: str, hint: str | None = None) -> DetectionRuleError:
        return DetectionRuleError(f"line {at}: rule {doc.name!r}: {message}", hint=hint)

    if not _NAME.fullmatch(doc.name):
        raise bad("a rule name is 1-48 lower-case letters, digits and '-'")
    try:
        kind = Kind(doc.kind)
    except ValueError:
        raise bad(f"unknown kind {doc.kind[:48]!r}",
                  "use one of: " + ", ".join(k.value for k in Kind)) from None
    allowed = _PER[kind]
    per = allowed[0] if doc.per is None else \
        next((p for p in allowed if p.value == doc.per), None)
    if per is None:
        raise bad(f"a {kind.value} rule counts per {' or '.join(p.value for p in allowed)}")
    if kind in _NO_THRESHOLD:
        if doc.threshold is not None or doc.baseline is not None:
            raise bad(f"a {kind.value} rule fires on one event: it takes no threshold or "
                      "baseline")
    elif (doc.threshold is None) == (doc.baseline is None):
        raise bad("give either a static 'threshold' or a 'baseline' (not both)",
                  "e.g. 'threshold: 20' or 'baseline: {deviations: 4, floor: 20}'")
    action = Action(doc.action)
    if action.automatic and per is not Per.DEVICE:
        raise bad(f"action {action.value} needs a device: a rule per {per.value} can only "
                  "notify")
    if action.automatic and kind in _CLAIMED_IDENTITY:
        raise bad(f"action {action.value} is refused on a {kind.value} rule: its evidence "
                  "can be produced in a device's name by someone else, who could then have "
                  "iotsec switch the device off", "use 'action: notify'")
    base = doc.baseline
    return Rule(name=doc.name, kind=kind, per=per, window=doc.window, threshold=doc.threshold,
                baseline=BaselineSpec(base.deviations, base.warmup, base.floor)
                if base is not None else None,
                learn=doc.learn, severity=Severity(doc.severity), action=action,
                dry_run=doc.dry_run, enabled=doc.enabled, suggested=doc.suggested)


def parse_rules(data: bytes) -> RuleSet:
    """Validate a rule document; every error names its line."""
    if len(data) > MAX_RULES_BYTES:
        raise InputTooLargeError(f"the rule file is {len(data)} bytes; the limit is "
                                 f"{MAX_RULES_BYTES}", hint="remove rules that are not used")
    text = yamldoc.text_of(data, error=DetectionRuleError, what="the rule file")
    raw, node = _load(text)
    try:
        doc = _Document.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise yamldoc.invalid(exc, node, error=DetectionRuleError) from None
    rules: list[Rule] = []
    names: set[str] = set()
    for i, rule_doc in enumerate(doc.rules):
        at = yamldoc.line_of(node, ["rules", i]) or "?"
        rule = _rule(rule_doc, at)
        if rule.name in names:
            raise DetectionRuleError(f"line {at}: rule {rule.name!r} is defined twice")
        names.add(rule.name)
        rules.append(rule)
    bound: list[AuditAction] = []
    for i, item in enumerate(doc.audit):
        at = yamldoc.line_of(node, ["audit", i]) or "?"
        action = Action(item.action)
        if any(b.finding == item.finding for b in bound):
            raise DetectionRuleError(f"line {at}: finding {item.finding!r} is bound twice")
        if action.automatic and item.finding in _CLAIMED_FINDINGS:
            raise DetectionRuleError(
                f"line {at}: action {action.value} is refused on {item.finding}: its evidence "
                "can be produced in a device's name by someone else", hint="use 'action: notify'")
        bound.append(AuditAction(item.finding, action, item.dry_run))
    return RuleSet(tuple(rules), doc.max_automatic_actions, text, tuple(bound))


#: The rules in force when none are applied (``iotsec detect rules show`` prints them).
DEFAULT_RULES = """\
# iotsec detection rules. Every rule raises an alert; 'action' may also disable, revoke or
# quarantine the device (rules per device whose evidence the device itself produced only).
version: 1
# Automatic actions (disable, revoke, quarantine) allowed per hour across the fleet.
max_automatic_actions: 5
rules:
  - name: authn-failures-by-source      # password spraying / certificate probing
    kind: authn-failures
    per: source
    window: 60
    threshold: 20
    severity: high
  - name: authn-failures-by-device      # someone guessing one device's credentials
    kind: authn-failures
    per: device
    window: 300
    threshold: 10
    severity: medium
  - name: authz-denials-by-device       # a device probing topics it may not use
    kind: authz-denials
    per: device
    window: 60
    baseline: {deviations: 4, warmup: 10, floor: 20}
    severity: high
  - name: message-rate                  # a device flooding the broker
    kind: message-rate
    window: 60
    baseline: {deviations: 6, warmup: 30, floor: 600}
    severity: medium
  - name: message-size                  # unusually large payloads (exfiltration)
    kind: message-size
    baseline: {deviations: 6, warmup: 100, floor: 65536}
    severity: medium
  - name: new-source-network            # a device connecting from somewhere new
    kind: new-source-network
    learn: 86400
    severity: medium
  - name: disconnect-storm              # many devices dropping at once
    kind: disconnect-storm
    per: fleet
    window: 60
    baseline: {deviations: 6, warmup: 30, floor: 50}
    severity: high
  - name: certificate-two-places        # a cloned certificate
    kind: certificate-two-places
    severity: critical
  - name: client-id-conflict            # two clients fighting over one client id
    kind: client-id-conflict
    window: 300
    threshold: 3
    severity: high
  - name: unusual-topic                 # a device publishing outside its usual topics
    kind: unusual-topic
    learn: 86400
    severity: medium
  - name: heartbeat-silence             # a device gone silent
    kind: heartbeat-silence
    threshold: 3600
    severity: low
"""


def default_rules() -> RuleSet:
    return parse_rules(DEFAULT_RULES.encode("utf-8"))
