"""The compliance service on a real fleet (SQLite and PostgreSQL): every status reachable,
attestations versioned with their history, bad input refused with nothing written."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.compliance import reports as compliance
from iotsec.app.compliance.reports import AttestationRequest
from iotsec.app.events import list_events
from iotsec.app.identity import devices
from iotsec.app.pki import issuance
from iotsec.compliance.catalog import Status
from iotsec.errors import (
    AttestationError,
    ScanReportError,
    UnknownFrameworkError,
    UnknownProvisionError,
)
from iotsec.store import models as m
from iotsec.store.db import reading
from tests.compliance.scanfiles import scan_report
from tests.helpers import make_csr

ETSI = "etsi-en-303-645"


def _fleet(rt, n: int = 2) -> None:
    for i in range(n):
        devices.add_device(rt, devices.NewDevice.parse(f"d{i}"))
        issuance.issue_from_csr(rt, f"d{i}", make_csr())


def _attest(rt, provision: str, status: str, note: str = "see the security policy",
            framework: str = ETSI):
    return compliance.attest(rt, AttestationRequest(framework, provision, status, note,
                                                    "tester"))


def _rows(rt) -> int:
    with reading(rt.engine) as conn:
        return int(conn.execute(select(func.count())
                                .select_from(m.compliance_attestations)).scalar_one())


def test_every_status_is_reachable_with_a_real_fleet(rt):
    _fleet(rt)
    issue_token(rt, "forever", Scope.ADMIN, None)
    _attest(rt, "5.3-14", "not_applicable", "every device can be updated over the air")
    result = compliance.report(rt, ETSI)
    # pass: per-device credentials, no shared certificate, no weak key.
    assert result.get("5.4-4").status is Status.PASS
    # fail: an admin token that never expires (audit/token-no-expiry, high).
    failing = result.get("5.1-3")
    assert failing.status is Status.FAIL
    assert any(e.ref == "audit/token-no-expiry" and "token:forever" in e.objects
               for e in failing.evidence)
    # partial: the broker checks cannot run without a broker directory.
    assert result.get("5.1-1").status is Status.PARTIAL
    # manual: a document only a person can vouch for.
    assert result.get("5.2-1").status is Status.MANUAL and result.get("5.2-1").unjustified
    # not_applicable: attested, with its note as the justification.
    na = result.get("5.3-14")
    assert na.status is Status.NOT_APPLICABLE and na.justified
    assert "updated over the air" in na.justification


def test_an_expiring_ca_fails_the_provision_a_healthy_one_passes(rt, clock):
    healthy = compliance.report(rt, ETSI).get("5.5-8")
    item = next(e for e in healthy.evidence if e.ref == "audit/ca-expiring")
    assert item.outcome == "pass" and healthy.status is not Status.FAIL
    # Ten days before the issuing CA expires (ten years after init).
    issuing = rt.authority("issuing")
    clock.now = issuing.not_after - timedelta(days=10)
    expiring = compliance.report(rt, ETSI).get("5.5-8")
    assert expiring.status is Status.FAIL
    item = next(e for e in expiring.evidence if e.ref == "audit/ca-expiring")
    assert item.outcome == "fail" and any(o.startswith("ca:") for o in item.objects)


def test_a_scan_report_is_evidence(rt):
    weak = compliance.report(rt, "owasp-iot-top10", scan_report=scan_report(weak=True))
    assert weak.get("I1").status is Status.FAIL  # mqtt/anonymous is tagged owasp-iot:I1
    assert weak.get("I2").status is Status.FAIL  # Telnet
    clean = compliance.report(rt, "owasp-iot-top10", scan_report=scan_report(weak=False))
    assert clean.get("I2").status is not Status.FAIL


def test_attestations_are_versioned_and_the_history_is_kept(rt, clock):
    first = _attest(rt, "5.2-1", "manual", "policy being drafted")
    clock.advance(timedelta(days=1))
    second = _attest(rt, "5.2-1", "pass", "published at https://example.com/security")
    assert (first.version, second.version) == (1, 2)
    _attest(rt, "I6", "not_applicable", "no personal data", framework="owasp-iot-top10")
    latest = compliance.attestations(rt, ETSI)
    assert [(a.provision, a.version, a.status) for a in latest] == [
        ("5.2-1", 2, Status.PASS)]
    history = compliance.attestations(rt, ETSI, history=True)
    assert [(a.version, a.status) for a in history] == [(1, Status.MANUAL), (2, Status.PASS)]
    assert history[0].note == "policy being drafted"
    assert len(compliance.attestations(rt)) == 2  # both frameworks
    result = compliance.report(rt, ETSI)
    assert result.get("5.2-1").status is Status.PASS
    assert result.get("5.2-1").attestation.version == 2
    kinds = [e.kind for e in list_events(rt.engine, kind="compliance.attest")]
    assert kinds == ["compliance.attest"] * 3


def test_provision_lookup_accepts_the_printed_number_in_any_case(rt):
    recorded = _attest(rt, "5.13-1a", "pass", "inputs are schema-validated")
    assert recorded.provision == "5.13-1A"


@pytest.mark.parametrize(("framework", "provision", "status", "note", "error", "message"), [
    ("iso-27001", "5.2-1", "pass", "x", UnknownFrameworkError, "unknown framework"),
    (ETSI, "5.14-1", "pass", "x", UnknownProvisionError, "has no provision '5.14-1'"),
    (ETSI, "5.2-1", "ok", "x", AttestationError, "status 'ok' is not allowed"),
    (ETSI, "5.2-1", "pass", "   ", AttestationError, "the note is empty"),
    (ETSI, "5.2-1", "pass", "x" * 4001, AttestationError, "the limit is 4000"),
    (ETSI, "5.2-1", "pass", "bad\x1b[31m", AttestationError, "control characters"),
])
def test_bad_attestations_are_refused_and_nothing_is_written(
        rt, framework, provision, status, note, error, message):
    with pytest.raises(error, match=message.replace("[", r"\[")) as err:
        _attest(rt, provision, status, note, framework=framework)
    assert err.value.hint
    assert _rows(rt) == 0


def test_a_bad_scan_report_stops_the_report_before_anything_is_recorded(rt):
    with pytest.raises(ScanReportError):
        compliance.report(rt, ETSI, scan_report=b"{not json")
    assert list_events(rt.engine, kind="compliance.report") == []
    assert list_events(rt.engine, kind="audit.run") == []


def test_the_report_is_recorded_as_an_event(rt):
    result = compliance.report(rt, "nistir-8259a", actor="tester")
    [event] = list_events(rt.engine, kind="compliance.report")
    assert event.subject == "nistir-8259a" and event.actor == "tester"
    assert event.detail is not None and event.detail["by_status"] == result.by_status()


def test_facts_come_from_the_state(rt):
    from iotsec.app.compliance.facts import gather_facts

    facts = gather_facts(rt)
    assert facts["identity.private-ca"].ok is True
    assert facts["identity.device-credentials"].ok is None  # no device yet
    assert facts["api.tls"].ok is None  # 'iotsec serve' has not run
    assert facts["firmware.ota-repository"].ok is None
    assert facts["auth.no-default-passwords"].ok is True
    devices.add_device(rt, devices.NewDevice.parse("lonely"))
    devices.add_device(rt, devices.NewDevice.parse("ok"))
    issuance.issue_from_csr(rt, "ok", make_csr())
    from iotsec.app.identity.lifecycle import change_state
    from iotsec.identity.registry import DeviceState

    change_state(rt, "lonely", DeviceState.ACTIVE)
    lacking = gather_facts(rt)["identity.device-credentials"]
    assert lacking.ok is False and lacking.refs == ("device:lonely",)


def test_a_key_file_readable_by_others_fails_custody(rt):
    from iotsec.app.compliance.facts import gather_facts

    if rt.settings.keystore != "file":
        pytest.skip("file keystore only")
    key_file = next(p for p in rt.settings.keys_dir.iterdir() if p.is_file())
    os.chmod(key_file, 0o644)
    fact = gather_facts(rt)["keys.custody"]
    assert fact.ok is False and f"key:{key_file.name}" in fact.refs
    assert compliance.report(rt, ETSI).get("5.4-1").status is Status.FAIL


def test_concurrent_attestations_get_distinct_versions(rt):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> int:
        return _attest(rt, "5.2-1", "manual", f"note {i}").version

    with ThreadPoolExecutor(4) as pool:
        versions = sorted(pool.map(one, range(8)))
    assert versions == list(range(1, 9))
    history = compliance.attestations(rt, ETSI, history=True)
    assert [a.version for a in history] == list(range(1, 9))
