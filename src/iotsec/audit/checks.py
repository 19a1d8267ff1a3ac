"""Run every fleet audit check over a snapshot: the findings, sorted worst first, and one
:class:`CheckOutcome` per rule (how many objects it examined, or why it was skipped)."""

from __future__ import annotations

from collections.abc import Callable

from iotsec.audit import checks_ops as ops
from iotsec.audit import checks_pki as pki
from iotsec.audit.model import CheckOutcome
from iotsec.audit.rules import ALL_RULES
from iotsec.audit.snapshot import AuditOptions, Snapshot
from iotsec.scan.findings import Finding, sort_findings

__all__ = ["SINGLE_CHECKS", "run_checks"]

Check = Callable[[Snapshot, AuditOptions], tuple[list[Finding], CheckOutcome]]
MultiCheck = Callable[[Snapshot, AuditOptions], list[tuple[list[Finding], CheckOutcome]]]

SINGLE_CHECKS: tuple[Check, ...] = (
    pki.ca_expiring, pki.ca_weak_key, pki.device_cert_expiring, pki.device_cert_old,
    pki.device_weak_key, pki.revoked_cert_connecting, pki.revoked_ca_active_certs,
    pki.shared_certificate, pki.client_id_conflict, ops.logging_disabled,
    ops.firmware_below_counter, ops.token_no_expiry,
)
MULTI_CHECKS: tuple[MultiCheck, ...] = (ops.policy, ops.broker)


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
