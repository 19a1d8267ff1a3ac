"""Run every fleet audit check over a snapshot: the findings, sorted worst first, and one
:class:`CheckOutcome` per rule (how many objects it examined, or why it was skipped)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from iotsec.audit import checks_identity as identity
from iotsec.audit import checks_ops as ops
from iotsec.audit import checks_pki as pki
from iotsec.audit.model import CheckOutcome
from iotsec.audit.rules import ALL_RULES
from iotsec.audit.snapshot import AuditOptions, CertFacts, EventFacts, Snapshot
from iotsec.findings.model import Finding, sort_findings

__all__ = ["SINGLE_CHECKS", "history_needed", "run_checks"]

Check = Callable[[Snapshot, AuditOptions], tuple[list[Finding], CheckOutcome]]
MultiCheck = Callable[[Snapshot, AuditOptions], list[tuple[list[Finding], CheckOutcome]]]

SINGLE_CHECKS: tuple[Check, ...] = (
    pki.ca_expiring, pki.ca_weak_key, pki.device_cert_expiring, pki.device_cert_old,
    pki.device_weak_key, pki.revoked_cert_connecting, pki.revoked_ca_active_certs,
    identity.shared_certificate, identity.client_id_conflict, ops.logging_disabled,
    ops.firmware_below_counter, ops.token_no_expiry,
)
MULTI_CHECKS: tuple[MultiCheck, ...] = (ops.policy, ops.broker)


def history_needed(states: Mapping[str, str], live: Sequence[CertFacts],
                   events: Iterable[EventFacts], since: int) -> set[str]:
    """The devices whose expired and revoked certificates the checks need: active devices
    without a valid certificate, and devices seen connecting or authenticating in the
    window without a certificate valid through all of it (see
    :func:`iotsec.audit.checks_pki.revoked_cert_connecting`). In a healthy fleet this is
    a handful, so their history is read by device, not the whole table."""
    valid_since: dict[str, int] = {}
    for c in live:
        if c.device_id is not None and c.kind == "device":
            known = valid_since.get(c.device_id)
            if known is None or c.not_before < known:
                valid_since[c.device_id] = c.not_before
    needed = {d for d, state in states.items() if state == "active" and d not in valid_since}
    live_serials: set[str] | None = None
    for e in events:
        if e.actor is None or e.kind not in pki.IDENTITY_KINDS:
            continue
        if e.kind == "device-token":
            # A token signed with a certificate's key names it (kid = serial): when that is
            # not a valid certificate, its history tells whether it was revoked.
            kid = e.detail.get("kid")
            if live_serials is None:
                live_serials = {c.serial for c in live}
            if isinstance(kid, str) and kid not in live_serials:
                needed.add(e.actor)
        elif valid_since.get(e.actor, since + 1) > since:
            needed.add(e.actor)
    return needed


def run_checks(snapshot: Snapshot, options: AuditOptions
               ) -> tuple[list[Finding], dict[str, CheckOutcome]]:
    """Every check of :data:`iotsec.audit.rules.ALL_RULES`, over ``snapshot``."""
    results = [check(snapshot, options) for check in SINGLE_CHECKS]
    for multi in MULTI_CHECKS:
        results.extend(multi(snapshot, options))
    findings: list[Finding] = []
    outcomes: dict[str, CheckOutcome] = {}
    for found, outcome in results:
        findings.extend(found)
        outcomes[outcome.rule_id] = outcome
    missing = [rule.id for rule in ALL_RULES if rule.id not in outcomes]
    if missing:  # a rule without a check would pass silently: refuse
        raise RuntimeError(f"audit rules without a check: {', '.join(missing)}")
    ordered = {rule.id: outcomes[rule.id] for rule in ALL_RULES}
    return sort_findings(findings), ordered
