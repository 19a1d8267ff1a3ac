"""PKI checks over a real store (SQLite and PostgreSQL): for each, a fleet state that
triggers it and one that does not, with the exact set of findings."""

from __future__ import annotations

import subprocess
from datetime import timedelta

from sqlalchemy import update

from iotsec.app.events import Event
from iotsec.app.identity.device_tokens import register_key
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.issuance import issue_from_csr, renew
from iotsec.app.pki.revocation import revoke
from iotsec.pki.crl import RevocationReason
from iotsec.store import models as m
from iotsec.store.db import transaction
from tests.audit.conftest import Fleet, add, audit, found, insert_certificate
from tests.helpers import make_csr, make_key


def test_a_clean_fleet_has_no_finding(fleet: Fleet):
    result = audit(fleet.rt)
    assert found(result) == set()
    assert all(o.ran for rid, o in result.outcomes.items()
               if not rid.startswith("audit/broker-") and rid != "audit/firmware-below-counter")
    assert result.outcomes["audit/device-cert-expiring"].checked == 2
    assert result.outcomes["audit/device-weak-key"].checked == 2


def test_ca_expiring_flags_the_issuing_ca_within_the_threshold(fleet: Fleet, clock):
    # The issuing CA lives 10 years, the root 20: 100 days before the issuing CA's end.
    clock.advance(timedelta(days=10 * 365 - 100))
    result = audit(fleet.rt)
    assert found(result, "audit/ca-expiring") == {("audit/ca-expiring", "ca:issuing")}
    (finding,) = result.findings_of("audit/ca-expiring")
    assert finding.severity.value == "high"
    assert finding.evidence_dict()["threshold_days"] == 180
    # With a shorter threshold it passes; within 30 days it is critical.
    assert found(audit(fleet.rt, ca_days=90), "audit/ca-expiring") == set()
    clock.advance(timedelta(days=80))
    (finding,) = audit(fleet.rt).findings_of("audit/ca-expiring")
    assert finding.severity.value == "critical"


def test_ca_weak_key_flags_a_weak_or_sha1_ca(fleet: Fleet, openssl: str, tmp_path):
    rt = fleet.rt
    assert found(audit(rt), "audit/ca-weak-key") == set()
    # A legacy issuing CA certificate: RSA 2048 signed with SHA-1 (imported, not made by
    # iotsec, which only makes P-256/P-384/RSA-3072 CAs; cryptography refuses to sign
    # with SHA-1, openssl still does).
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha1", "-nodes",
                    "-subj", "/CN=legacy issuing", "-days", "3000", "-outform", "DER",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.der")],
                   check=True, capture_output=True)
    with transaction(rt.engine) as conn:
        conn.execute(update(m.authorities).where(m.authorities.c.role == "issuing")
                     .values(cert_der=(tmp_path / "c.der").read_bytes(),
                             subject="CN=legacy issuing"))
    result = audit(rt)
    assert found(result, "audit/ca-weak-key") == {("audit/ca-weak-key", "ca:issuing")}
    (finding,) = result.findings_of("audit/ca-weak-key")
    assert finding.severity.value == "high"
    assert "RSA key of 2048 bits" in finding.message
    assert "sha1WithRSAEncryption" in finding.message


def test_device_cert_expiring_flags_the_newest_certificate_and_expired_devices(fleet: Fleet,
                                                                              clock):
    rt = fleet.rt
    short = add(rt, "dev-short", days=20)
    fleet.connect("dev-short")
    result = audit(rt)
    assert found(result, "audit/device-cert-expiring") == {
        ("audit/device-cert-expiring", f"cert:{short.serial}")}
    assert found(audit(rt, cert_days=10), "audit/device-cert-expiring") == set()
    # 30 days on: dev-short's only certificate has expired.
    clock.advance(timedelta(days=30))
    fleet.connect("dev-short")
    result = audit(rt)
    assert found(result, "audit/device-cert-expiring") == {
        ("audit/device-cert-expiring", "device:dev-short")}
    assert result.findings_of("audit/device-cert-expiring")[0].severity.value == "high"


def test_renewing_clears_device_cert_expiring(fleet: Fleet):
    rt = fleet.rt
    short = add(rt, "dev-short", days=20)
    fleet.connect("dev-short")
    renew(rt, short.serial, make_csr())
    assert found(audit(rt), "audit/device-cert-expiring") == set()


def test_device_cert_old_flags_certificates_past_the_rotation_age(fleet: Fleet, clock):
    rt = fleet.rt
    long_lived = add(rt, "dev-old", days=800)
    clock.advance(timedelta(days=400))
    for d in ("dev-a", "dev-b", "dev-old"):
        fleet.connect(d)
    result = audit(rt, cert_days=1)
    # dev-a and dev-b's 365-day certificates have expired (another check); dev-old's is
    # 400 days old.
    assert found(result, "audit/device-cert-old") == {
        ("audit/device-cert-old", f"cert:{long_lived.serial}")}
    assert found(audit(rt, max_cert_age=500, cert_days=1), "audit/device-cert-old") == set()


def test_device_weak_key_flags_weak_certificates_and_registered_keys(fleet: Fleet):
    rt = fleet.rt
    now = rt.now()
    # RSA 2048 is accepted (policy minimum): no finding.
    add(rt, "dev-rsa", make_key("rsa2048"))
    fleet.connect("dev-rsa")
    assert found(audit(rt), "audit/device-weak-key") == set()
    # A legacy RSA-1024 certificate (imported; iotsec refuses such CSRs).
    add_device(rt, NewDevice.parse("dev-legacy"))
    serial = insert_certificate(rt, "dev-legacy", make_key("rsa1024"), serial=0x1234567,
                                not_before=now - timedelta(days=1),
                                not_after=now + timedelta(days=100))
    result = audit(rt)
    assert found(result, "audit/device-weak-key") == {
        ("audit/device-weak-key", f"cert:{serial}")}
    assert result.findings_of("audit/device-weak-key")[0].evidence_dict()["key"] == "RSA 1024"


def test_device_weak_key_reads_registered_token_keys(fleet: Fleet):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    rt = fleet.rt
    pub = make_key("p256").public_key().public_bytes(Encoding.DER,
                                                     PublicFormat.SubjectPublicKeyInfo)
    register_key(rt, "dev-a", pub)
    result = audit(rt)
    assert found(result, "audit/device-weak-key") == set()
    assert result.outcomes["audit/device-weak-key"].checked == 3


def test_revoked_cert_connecting_flags_connections_and_tokens_after_revocation(fleet: Fleet,
                                                                              clock):
    rt = fleet.rt
    serial_a = fleet.certs["dev-a"].serial
    serial_b = fleet.certs["dev-b"].serial
    # Connections before the revocation are fine.
    revoke(rt, serial_a, RevocationReason.keyCompromise)
    revoke(rt, serial_b, RevocationReason.keyCompromise)
    assert found(audit(rt), "audit/revoked-cert-connecting") == set()
    clock.advance(timedelta(minutes=5))
    fleet.connect("dev-a", "198.51.100.7:5000")
    rt.events.record(Event(rt.now(), "device-token", "success", actor="dev-b",
                           detail={"kid": serial_b, "alg": "ES256"}))
    result = audit(rt)
    assert found(result, "audit/revoked-cert-connecting") == {
        ("audit/revoked-cert-connecting", "device:dev-a"),
        ("audit/revoked-cert-connecting", f"cert:{serial_b}"),
    }
    assert all(f.severity.value == "critical"
               for f in result.findings_of("audit/revoked-cert-connecting"))


def test_a_device_renewed_after_revocation_may_connect(fleet: Fleet, clock):
    rt = fleet.rt
    revoke(rt, fleet.certs["dev-a"].serial, RevocationReason.superseded)
    issue_from_csr(rt, "dev-a", make_csr())
    clock.advance(timedelta(minutes=1))
    fleet.connect("dev-a")
    assert found(audit(rt), "audit/revoked-cert-connecting") == set()


def test_revoked_ca_active_certs_flags_certificates_under_a_retired_ca(fleet: Fleet):
    rt = fleet.rt
    assert found(audit(rt), "audit/revoked-ca-active-certs") == set()
    revoke(rt, fleet.certs["dev-b"].serial, RevocationReason.superseded)
    # The issuing CA is retired (no longer active); dev-a's certificate is still valid.
    with transaction(rt.engine) as conn:
        conn.execute(update(m.authorities).where(m.authorities.c.role == "issuing")
                     .values(active=False))
    result = audit(rt)
    assert found(result, "audit/revoked-ca-active-certs") == {
        ("audit/revoked-ca-active-certs", f"cert:{fleet.certs['dev-a'].serial}")}
    assert "iotsec cert revoke" in result.findings_of("audit/revoked-ca-active-certs")[0].fix


def test_shared_certificate_flags_a_key_on_two_devices_and_overlapping_sessions(fleet: Fleet,
                                                                               clock):
    rt = fleet.rt
    key = make_key()
    for d in ("clone-1", "clone-2"):
        add_device(rt, NewDevice.parse(d))
        # Issuance refuses a shared key unless told otherwise; the audit still finds one
        # that was allowed (or stored before the refusal existed).
        issue_from_csr(rt, d, make_csr(key), allow_shared_key=True)
        fleet.connect(d)
    # dev-a: one session from one address, then reconnects from another after a
    # disconnect (no overlap); dev-b: two addresses at once.
    fleet.disconnect("dev-a", "192.0.2.10:40000")
    fleet.connect("dev-a", "192.0.2.99:40001")
    clock.advance(timedelta(seconds=5))
    fleet.connect("dev-b", "203.0.113.5:1234")
    result = audit(rt)
    hits = found(result, "audit/shared-certificate")
    assert ("audit/shared-certificate", "device:dev-b") in hits
    shared_key = [u for r, u in hits if u.startswith("key:")]
    assert len(shared_key) == 1 and len(hits) == 2
    (key_finding,) = [f for f in result.findings_of("audit/shared-certificate")
                      if f.location.uri.startswith("key:")]
    assert key_finding.evidence_dict()["devices"] == ["clone-1", "clone-2"]


def test_client_id_conflict_flags_collisions_and_foreign_client_ids(fleet: Fleet):
    rt = fleet.rt
    assert found(audit(rt), "audit/client-id-conflict") == set()
    rt.events.record(Event(rt.now(), "broker.collision", "failure", actor="dev-a",
                           source="203.0.113.9:999",
                           detail={"previous_source": "192.0.2.10:40000"}))
    fleet.connect("dev-b", "192.0.2.11:40000", client_id="dev-x")
    result = audit(rt)
    assert found(result, "audit/client-id-conflict") == {
        ("audit/client-id-conflict", "device:dev-a"),
        ("audit/client-id-conflict", "client:dev-x"),
    }


def test_a_token_signed_with_a_revoked_certificate_of_a_renewed_device_is_flagged(
        fleet: Fleet, clock):
    rt = fleet.rt
    old = fleet.certs["dev-a"].serial
    new = renew(rt, old, make_csr())  # the old certificate is revoked (superseded) now
    clock.advance(timedelta(minutes=2))
    # dev-a holds a valid certificate, but a token is accepted under the revoked one's kid.
    rt.events.record(Event(rt.now(), "device-token", "success", actor="dev-a",
                           detail={"kid": old, "alg": "ES256"}))
    rt.events.record(Event(rt.now(), "device-token", "success", actor="dev-a",
                           detail={"kid": new.serial, "alg": "ES256"}))
    assert found(audit(rt), "audit/revoked-cert-connecting") == {
        ("audit/revoked-cert-connecting", f"cert:{old}")}
