"""The evaluator: statuses from evidence, the attestation precedence rule, missing
justifications, and how results count for --fail-on."""

from __future__ import annotations

import pytest

from iotsec.compliance.catalog import Level, Status
from iotsec.compliance.evaluate import evaluate, result_severity
from iotsec.compliance.evidence import ScanEvidence, ScanItem
from iotsec.compliance.frameworks import FRAMEWORKS
from iotsec.compliance.frameworks.etsi_en_303_645 import ETSI_EN_303_645 as ETSI
from iotsec.compliance.frameworks.nistir_8259a import NISTIR_8259A as NIST
from iotsec.compliance.frameworks.owasp_iot import OWASP_IOT_TOP10 as OWASP
from iotsec.findings.model import Severity
from tests.compliance.support import attestation, audit, evidence, facts


def test_clean_evidence_passes_every_automatic_provision():
    result = evaluate(ETSI, evidence(scan=_scan()))
    for r in result.results:
        if r.provision.id == "4-1":
            continue
        expected = Status.PASS if r.provision.checks.automatic else Status.MANUAL
        assert r.status is expected, (r.provision.id, r.justification)


def test_a_high_audit_finding_fails_the_provision_and_names_the_objects():
    ev = evidence(audit_result=audit({"audit/ca-expiring": ["ca:issuing"]}))
    r = evaluate(ETSI, ev).get("5.5-8")
    assert r.status is Status.FAIL and r.automatic is Status.FAIL
    assert r.severity is Severity.HIGH  # a mandatory provision
    item = next(e for e in r.evidence if e.ref == "audit/ca-expiring")
    assert item.outcome == "fail" and item.objects == ("ca:issuing",)
    assert "audit/ca-expiring" in r.justification


def test_a_lesser_finding_makes_it_partial():
    ev = evidence(audit_result=audit({"audit/device-cert-old": ["device:d1"]},
                                     severity=Severity.MEDIUM))
    r = evaluate(ETSI, ev).get("5.1-4")
    assert r.status is Status.PARTIAL and r.severity is Severity.MEDIUM


def test_skipped_checks_leave_part_undecided():
    ev = evidence(audit_result=audit(skipped=["audit/broker-anonymous"]))
    r = evaluate(ETSI, ev).get("5.1-1")  # broker-anonymous + a fact + scan
    assert r.status is Status.PARTIAL
    assert "not decided: audit/broker-anonymous" in r.justification


def test_checks_that_examined_nothing_prove_nothing():
    ev = evidence(audit_result=audit(checked=0))
    r = evaluate(ETSI, ev).get("5.3-8")  # only audit/firmware-below-counter
    assert r.status is Status.MANUAL and r.automatic is None


def test_nothing_decidable_is_manual_and_unjustified():
    ev = evidence(fact_map=facts({"auth.brute-force-limit": None}))
    r = evaluate(ETSI, ev).get("5.1-5")
    assert r.status is Status.MANUAL and r.unjustified
    assert r.severity is Severity.MEDIUM  # a missing justification of a mandatory provision


def test_without_an_audit_the_reason_is_shown():
    from iotsec.compliance.evidence import Evidence
    from tests.compliance.support import NOW

    ev = Evidence(now=NOW, audit=None, audit_missing="the fleet audit could not run: x",
                  facts=facts())
    r = evaluate(ETSI, ev).get("5.3-8")
    assert r.status is Status.MANUAL and "could not run: x" in r.justification


# --------------------------------------------------------------------------- attestations


def test_an_attestation_decides_a_manual_provision():
    ev = evidence(attestations=[attestation("5.2-1", Status.PASS, "policy at /security")])
    r = evaluate(ETSI, ev).get("5.2-1")
    assert r.status is Status.PASS and r.automatic is None and r.justified
    assert "policy at /security" in r.justification and r.severity is None


def test_an_attestation_never_turns_a_failing_check_into_a_pass():
    ev = evidence(audit_result=audit({"audit/ca-expiring": ["ca:root"]}),
                  attestations=[attestation("5.5-8", Status.PASS, "we are fine")])
    r = evaluate(ETSI, ev).get("5.5-8")
    assert r.status is Status.FAIL
    assert r.conflict is not None and "evidence wins" in r.conflict
    assert "we are fine" in r.justification  # both are shown


def test_not_applicable_over_a_failing_check_is_a_conflict():
    ev = evidence(audit_result=audit({"audit/ca-expiring": ["ca:root"]}),
                  attestations=[attestation("5.5-8", Status.NOT_APPLICABLE)])
    r = evaluate(ETSI, ev).get("5.5-8")
    assert r.status is Status.FAIL and r.conflict is not None


def test_not_applicable_applies_where_no_check_fails():
    ev = evidence(attestations=[attestation("5.3-4", Status.NOT_APPLICABLE, "mains devices")])
    r = evaluate(ETSI, ev).get("5.3-4")
    assert r.status is Status.NOT_APPLICABLE and r.automatic is Status.PASS
    assert r.justified and not r.unjustified and r.severity is None


def test_an_attestation_can_make_a_result_worse():
    ev = evidence(attestations=[attestation("5.5-1", Status.FAIL, "device X speaks telnet")])
    r = evaluate(ETSI, ev).get("5.5-1")
    assert r.status is Status.FAIL and r.conflict is None


def test_a_manual_attestation_only_records_a_justification():
    ev = evidence(attestations=[attestation("5.5-1", Status.MANUAL, "review pending")])
    r = evaluate(ETSI, ev).get("5.5-1")
    assert r.status is Status.PASS and "review pending" in r.justification


# --------------------------------------------------------------------------- 4-1 and severity


def test_provision_4_1_lists_what_lacks_a_justification():
    result = evaluate(ETSI, evidence())
    r = result.get("4-1")
    assert r.status is Status.FAIL and r.severity is Severity.HIGH
    manual = [x.provision.id for x in result.results if x.status is Status.MANUAL]
    assert set(manual) <= {o.removeprefix("provision:") for o in r.evidence[0].objects}


def test_provision_4_1_passes_once_everything_is_justified():
    base = evaluate(ETSI, evidence())
    notes = [attestation(x.provision.id, Status.NOT_APPLICABLE, "not for this fleet")
             for x in base.results if x.status is Status.MANUAL]
    result = evaluate(ETSI, evidence(attestations=notes))
    assert result.get("4-1").status is Status.PASS
    assert not [x for x in result.results if x.unjustified]


def test_a_failed_recommendation_needs_a_justification():
    ev = evidence(audit_result=audit({"audit/policy-permissive": ["policy:device"]}))
    r = evaluate(ETSI, ev).get("5.6-7")  # R
    assert r.status is Status.FAIL and r.unjustified and r.severity is Severity.MEDIUM
    justified = evaluate(ETSI, evidence(
        audit_result=audit({"audit/policy-permissive": ["policy:device"]}),
        attestations=[attestation("5.6-7", Status.FAIL, "accepted until Q3")])).get("5.6-7")
    assert justified.status is Status.FAIL and not justified.unjustified


@pytest.mark.parametrize(("level", "status", "unjustified", "expected"), [
    (Level.MANDATORY, Status.FAIL, False, Severity.HIGH),
    (Level.RECOMMENDED, Status.FAIL, False, Severity.MEDIUM),
    (None, Status.FAIL, False, Severity.HIGH),
    (Level.MANDATORY, Status.PARTIAL, False, Severity.MEDIUM),
    (Level.RECOMMENDED, Status.PARTIAL, False, Severity.LOW),
    (Level.MANDATORY, Status.MANUAL, True, Severity.MEDIUM),
    (Level.RECOMMENDED, Status.NOT_APPLICABLE, True, Severity.LOW),
    (Level.MANDATORY, Status.MANUAL, False, None),
    (Level.MANDATORY, Status.PASS, False, None),
])
def test_result_severity(level, status, unjustified, expected):
    assert result_severity(level, status, unjustified) is expected


# --------------------------------------------------------------------------- scan evidence


def _scan(*items: ScanItem) -> ScanEvidence:
    return ScanEvidence(started_at="2026-06-01T11:00:00Z", targets=("127.0.0.1",),
                        services=4, findings=items)


def test_scan_findings_fail_the_provisions_their_tags_name():
    telnet = ScanItem("plaintext/telnet", Severity.HIGH, "tcp://127.0.0.1:23", "Telnet",
                      ("owasp-iot:I2", "etsi:5.6-1", "etsi:5.5-1"))
    result = evaluate(OWASP, evidence(scan=_scan(telnet)))
    r = result.get("I2")
    assert r.status is Status.FAIL
    assert any(e.source == "scan" and e.objects == ("tcp://127.0.0.1:23",) for e in r.evidence)
    assert evaluate(ETSI, evidence(scan=_scan(telnet))).get("5.6-1").status is Status.FAIL
    # NIST has no tags: its provisions name scanner rules by prefix.
    assert evaluate(NIST, evidence(scan=_scan(telnet))).get(
        "logical-access-to-interfaces").status is Status.FAIL


def test_a_clean_scan_is_evidence_too():
    r = evaluate(OWASP, evidence(scan=_scan())).get("I2")
    assert r.status is Status.PASS
    assert any(e.source == "scan" and e.outcome == "pass" for e in r.evidence)


def test_a_scan_only_provision_without_a_scan_is_manual():
    r = evaluate(ETSI, evidence()).get("5.6-5")
    assert r.status is Status.MANUAL and "--scan" in r.justification


def test_scores():
    result = evaluate(OWASP, evidence(attestations=[
        attestation("I6", Status.NOT_APPLICABLE, framework="owasp-iot-top10"),
        attestation("I10", Status.PARTIAL, framework="owasp-iot-top10")]))
    # 8 automatic passes, I10 partial, I6 left out.
    assert result.score() == round(100 * 8.5 / 9, 1)
    assert result.by_status()["not_applicable"] == 1


def test_every_framework_evaluates_every_provision():
    for fw in FRAMEWORKS.values():
        result = evaluate(fw, evidence())
        assert [r.provision.id for r in result.results] == fw.ids
