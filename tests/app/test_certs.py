"""Certificate lifecycle through the service layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki import bundles, cert_records, crl, issuance, revocation
from iotsec.errors import (
    ConflictError,
    CsrError,
    DeviceStateError,
    InvalidInputError,
    MalformedInputError,
    NotFoundError,
    WeakKeyError,
)
from iotsec.identity.registry import DeviceState
from iotsec.pki.crl import RevocationReason
from tests.helpers import make_csr, make_key


@pytest.fixture
def device(rt):
    return devices.add_device(rt, devices.NewDevice.parse("dev-1", ["fleet"]))


def _count(rt) -> int:
    return len(cert_records.list_certificates(rt))


def test_issue_takes_identity_from_registry_not_csr(rt, device):
    record = issuance.issue_from_csr(rt, "dev-1", make_csr(cn="admin"))
    cert = x509.load_der_x509_certificate(record.der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:iotsec:device:dev-1"]
    assert record.status(rt.now()) == "valid"
    assert devices.get_device(rt, "dev-1").state is DeviceState.ACTIVE
    assert record.not_after - rt.now() == timedelta(days=365)


def test_a_records_pem_is_the_one_openssl_writes_for_its_der(rt, device, tmp_path):
    """The PEM handed out (an issuance's answer, ``cert show``) wraps the stored DER as
    RFC 7468 says, byte for byte what ``openssl x509`` writes and pyca/cryptography reads."""
    record = issuance.issue_from_csr(rt, "dev-1", make_csr())
    (tmp_path / "c.der").write_bytes(record.der)
    written = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "c.der"),
                              "-outform", "PEM"], capture_output=True, check=True).stdout
    assert record.pem == written.decode("ascii")
    assert x509.load_pem_x509_certificate(record.pem.encode()).public_bytes(
        serialization.Encoding.DER) == record.der


def test_days_override_is_capped_by_the_issuing_ca(rt, device):
    record = issuance.issue_from_csr(rt, "dev-1", make_csr(), days=30)
    assert record.not_after - rt.now() == timedelta(days=30)
    capped = issuance.issue_from_csr(rt, "dev-1", make_csr(), days=36_500)
    assert capped.not_after == rt.authority("issuing").not_after


def test_der_csr_is_accepted(rt, device):
    assert issuance.issue_from_csr(rt, "dev-1", make_csr(der=True)).device_id == "dev-1"


@pytest.mark.parametrize(("csr", "error"), [
    (b"garbage", MalformedInputError),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
     MalformedInputError),
    (b"", MalformedInputError),
])
def test_bad_csr_changes_nothing(rt, device, csr, error):
    with pytest.raises(error):
        issuance.issue_from_csr(rt, "dev-1", csr)
    assert _count(rt) == 0
    assert devices.get_device(rt, "dev-1").state is DeviceState.PENDING


def test_weak_and_forged_csrs_are_refused(rt, device):
    with pytest.raises(WeakKeyError, match="1024"):
        issuance.issue_from_csr(rt, "dev-1", make_csr(make_key("rsa1024")))
    good = bytearray(make_csr(der=True))
    good[-5] ^= 0x01  # inside the signature
    with pytest.raises((CsrError, MalformedInputError)):
        issuance.issue_from_csr(rt, "dev-1", bytes(good))
    assert _count(rt) == 0


def test_unknown_or_disabled_device(rt, device):
    with pytest.raises(NotFoundError):
        issuance.issue_from_csr(rt, "ghost", make_csr())
    change_state(rt, "dev-1", DeviceState.DISABLED)
    with pytest.raises(DeviceStateError):
        issuance.issue_from_csr(rt, "dev-1", make_csr())
    assert _count(rt) == 0


def test_batch_is_all_or_nothing(rt, device):
    devices.add_device(rt, devices.NewDevice.parse("dev-2"))
    with pytest.raises(NotFoundError):
        issuance.issue_batch(rt, [("dev-1", make_csr()), ("ghost", make_csr())])
    assert _count(rt) == 0
    issued = issuance.issue_batch(rt, [("dev-1", make_csr()), ("dev-2", make_csr())])
    assert {c.device_id for c in issued} == {"dev-1", "dev-2"}
    assert len({c.serial for c in issued}) == 2


def test_serials_are_unique_random_and_large(rt, device):
    serials = {issuance.issue_from_csr(rt, "dev-1", make_csr()).serial for _ in range(20)}
    assert len(serials) == 20
    assert all(int(s, 16).bit_length() > 64 for s in serials)


def test_revoke_and_crl(rt, device):
    a = issuance.issue_from_csr(rt, "dev-1", make_csr())
    b = issuance.issue_from_csr(rt, "dev-1", make_csr())
    first = crl.current_crl(rt)
    revoked = revocation.revoke(rt, a.serial.lower(), RevocationReason.keyCompromise)
    assert revoked.status(rt.now()) == "revoked"
    with pytest.raises(ConflictError, match="already revoked"):
        revocation.revoke(rt, a.serial, RevocationReason.unspecified)
    published = crl.current_crl(rt)
    assert published.number == first.number + 1
    parsed = x509.load_der_x509_crl(published.der)
    assert parsed.is_signature_valid(rt.authority("issuing").certificate.public_key())
    entry = parsed.get_revoked_certificate_by_serial_number(int(a.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert parsed.get_revoked_certificate_by_serial_number(int(b.serial, 16)) is None
    # Unchanged state: the same CRL is served again, not re-signed.
    assert crl.current_crl(rt).number == published.number


def test_revoke_unknown_serial(rt, device):
    with pytest.raises(NotFoundError):
        revocation.revoke(rt, "0123456789ABCDEF")
    with pytest.raises(InvalidInputError):
        revocation.revoke(rt, "not-hex")


def test_revoke_device_revokes_every_live_certificate(rt, device):
    serials = {issuance.issue_from_csr(rt, "dev-1", make_csr()).serial for _ in range(3)}
    revoked = revocation.revoke_device(rt, "dev-1", RevocationReason.cessationOfOperation)
    assert set(revoked) == serials
    assert revocation.revoke_device(rt, "dev-1") == []
    parsed = x509.load_der_x509_crl(crl.current_crl(rt).der)
    assert {e.serial_number for e in parsed} == {int(s, 16) for s in serials}


def test_retire_revokes(rt, device):
    record = issuance.issue_from_csr(rt, "dev-1", make_csr())
    change_state(rt, "dev-1", DeviceState.RETIRED)
    again = cert_records.get_certificate(rt, record.serial)
    assert again.revocation_reason is RevocationReason.cessationOfOperation


def test_renew_supersedes_immediately(rt, device):
    old = issuance.issue_from_csr(rt, "dev-1", make_csr())
    new = issuance.renew(rt, old.serial, make_csr())
    assert new.device_id == "dev-1" and new.serial != old.serial
    old_now = cert_records.get_certificate(rt, old.serial)
    assert old_now.status(rt.now()) == "revoked"
    assert old_now.revocation_reason is RevocationReason.superseded
    assert old_now.replaced_by == new.serial
    with pytest.raises(ConflictError, match="never be renewed"):
        issuance.renew(rt, old.serial, make_csr())


def test_renew_with_grace_period(rt, device, clock):
    old = issuance.issue_from_csr(rt, "dev-1", make_csr())
    before = crl.current_crl(rt)
    issuance.renew(rt, old.serial, make_csr(), grace=timedelta(days=2))
    assert cert_records.get_certificate(rt, old.serial).status(rt.now()) == "superseded"
    during = crl.current_crl(rt)
    assert len(x509.load_der_x509_crl(during.der)) == 0
    # A revocation that takes effect later does not rebuild the CRL now (a renewal storm
    # would re-sign it once per renewal): the same CRL is served until the grace is over.
    assert during.number == before.number and during.der == before.der
    with pytest.raises(ConflictError, match="already renewed"):
        issuance.renew(rt, old.serial, make_csr())
    clock.advance(timedelta(days=2, seconds=1))
    assert cert_records.get_certificate(rt, old.serial).status(rt.now()) == "revoked"
    published = crl.current_crl(rt)
    assert published.number > before.number
    parsed = x509.load_der_x509_crl(published.der)
    assert parsed.get_revoked_certificate_by_serial_number(int(old.serial, 16)) is not None


def test_revoked_cannot_be_renewed(rt, device):
    old = issuance.issue_from_csr(rt, "dev-1", make_csr())
    revocation.revoke(rt, old.serial, RevocationReason.keyCompromise)
    with pytest.raises(ConflictError, match="never be renewed"):
        issuance.renew(rt, old.serial, make_csr())
    assert _count(rt) == 1


def test_expiring_within(rt, device, clock):
    soon = issuance.issue_from_csr(rt, "dev-1", make_csr(), days=10)
    issuance.issue_from_csr(rt, "dev-1", make_csr(), days=100)
    gone = issuance.issue_from_csr(rt, "dev-1", make_csr(), days=5)
    revocation.revoke(rt, gone.serial)
    found = cert_records.list_certificates(rt, expiring_within=timedelta(days=30))
    assert [c.serial for c in found] == [soon.serial]
    clock.advance(timedelta(days=11))
    assert cert_records.list_certificates(rt, expiring_within=timedelta(days=30)) == []


def test_crl_is_refreshed_when_due(rt, device, clock):
    first = crl.current_crl(rt)
    assert crl.current_crl(rt).number == first.number
    clock.advance(timedelta(hours=rt.settings.crl_refresh_hours))
    second = crl.current_crl(rt)
    assert second.number == first.number + 1
    assert second.next_update - second.this_update == timedelta(
        hours=rt.settings.crl_lifetime_hours)


def test_keygen_bundle(rt, device):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    bundle = bundles.issue_with_keygen(rt, "dev-1", p12_passphrase=b"a long passphrase")
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    cert = x509.load_der_x509_certificate(bundle.certificate.der)
    assert key.public_key() == cert.public_key()
    p_key, p_cert, extra = pkcs12.load_key_and_certificates(bundle.pkcs12, b"a long passphrase")
    assert p_cert == cert and p_key is not None and len(extra) == 1
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(bundle.pkcs12, b"wrong")
    with pytest.raises(InvalidInputError):
        bundles.issue_with_keygen(rt, "dev-1", p12_passphrase=b"short")


def test_crl_distribution_point_when_configured(rt, device):
    plain = x509.load_der_x509_certificate(issuance.issue_from_csr(rt, "dev-1", make_csr()).der)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    rt.settings.crl_url = "https://pki.example.com/crl"
    cert = x509.load_der_x509_certificate(issuance.issue_from_csr(rt, "dev-1", make_csr()).der)
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for n in points[0].full_name] == [
        f"https://pki.example.com/crl?ca={rt.issuing_id()}"]


def test_dns_names_from_the_deployment_profile(rt, device):
    rt.settings.device_dns_names = ["{device_id}.devices.example.com"]
    cert = x509.load_der_x509_certificate(issuance.issue_from_csr(rt, "dev-1", make_csr()).der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["dev-1.devices.example.com"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:iotsec:device:dev-1"]
    rt.settings.device_dns_names = ["{device_id}..bad"]
    with pytest.raises(InvalidInputError):
        issuance.issue_from_csr(rt, "dev-1", make_csr())
