"""Re-enrolment with the device's own certificate and server-side key generation at the
service level, on SQLite and PostgreSQL: what may renew (an unrevoked iotsec device
certificate inside its validity or the renew-after-expiry window) and what may not
(revoked, superseded, expired, a server's, a claim's, not iotsec's); serverkeygen's key
matches its certificate and is never stored nor recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from iotsec.app.enrol import claims, est, secrets, templates
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.cert_records import CertificateRecord, get_certificate
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.pki.revocation import revoke
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    NotFoundError,
)
from iotsec.identity.enrolment import Template
from iotsec.identity.registry import DeviceState
from iotsec.pki.crl import RevocationReason
from tests.conftest import FakeClock
from tests.enrol.services_support import (
    Key,
    common_name,
    csr,
    dump,
    events,
    factory,
    refusals,
)
from tests.helpers import make_key, self_signed

SOURCE = "203.0.113.5"


def _device(rt: Runtime, device_id: str = "dev-a", key: Key | None = None
            ) -> tuple[est.ClientChain, CertificateRecord]:
    add_device(rt, NewDevice.parse(device_id))
    record = issue_from_csr(rt, device_id, csr(key or make_key()))
    return est.ClientChain((x509.load_der_x509_certificate(record.der),)), record


def _reenrol(rt: Runtime, chain: est.ClientChain, request: bytes | None = None, *,
             label: str | None = None) -> est.Issued:
    return est.reenrol(rt, chain, request or csr(), label=label, source=SOURCE)


def test_a_device_renews_itself_and_the_old_certificate_is_superseded_after_the_grace(
        rt: Runtime) -> None:
    chain, old = _device(rt)
    add_device(rt, NewDevice.parse("dev-b"))
    issued = _reenrol(rt, chain, csr(cn="dev-b"))  # the CSR's name is ignored
    assert issued.record.device_id == "dev-a" and common_name(issued.record.der) == "dev-a"
    before = get_certificate(rt, old.serial)
    assert before.replaced_by == issued.record.serial
    assert before.revocation_reason is RevocationReason.superseded
    assert before.revoked_at == rt.now().replace(microsecond=0) + timedelta(
        seconds=rt.settings.renew_grace)
    (event,) = events(rt, "est.reenrolled")
    assert event.actor == "dev-a" and event.source == SOURCE
    assert event.subject == issued.record.serial
    assert event.detail is not None
    assert event.detail["credential"] == f"certificate:{old.serial}"
    assert event.detail["replaces"] == old.serial


def test_a_superseded_certificate_cannot_renew_again_even_in_its_grace(rt: Runtime) -> None:
    chain, _ = _device(rt)
    _reenrol(rt, chain)
    with pytest.raises(EnrolmentForbiddenError, match="cannot be renewed") as info:
        _reenrol(rt, chain)
    assert info.value.status == 403
    assert "revoked or already renewed" in refusals(rt)[-1]


def test_a_lost_answer_is_answered_again_for_the_same_key_inside_the_grace(
        rt: Runtime, clock: FakeClock) -> None:
    chain, old = _device(rt)
    key = make_key()
    first = _reenrol(rt, chain, csr(key))
    # The answer never reached the device: it asks again with the old certificate and the
    # same new key, and gets the same certificate; nothing new is issued.
    again = _reenrol(rt, chain, csr(key))
    assert again.record.serial == first.record.serial
    assert get_certificate(rt, old.serial).replaced_by == first.record.serial
    repeated = events(rt, "est.reenrolled")[-1]
    assert repeated.detail is not None and repeated.detail["repeated"] is True
    # Another key is a second renewal: refused.
    with pytest.raises(EnrolmentForbiddenError, match="cannot be renewed"):
        _reenrol(rt, chain, csr(make_key()))
    # After the grace the old certificate is revoked: no answer at all any more.
    clock.advance(timedelta(seconds=rt.settings.renew_grace + 1))
    with pytest.raises(EnrolmentForbiddenError, match="cannot be renewed"):
        _reenrol(rt, chain, csr(key))


def test_a_lost_answer_is_not_repeated_once_the_new_certificate_is_revoked(
        rt: Runtime) -> None:
    chain, _ = _device(rt)
    key = make_key()
    first = _reenrol(rt, chain, csr(key))
    revoke(rt, first.record.serial, RevocationReason.keyCompromise)
    with pytest.raises(EnrolmentForbiddenError, match="cannot be renewed"):
        _reenrol(rt, chain, csr(key))


def test_a_revoked_certificate_cannot_renew(rt: Runtime) -> None:
    chain, old = _device(rt)
    revoke(rt, old.serial, RevocationReason.keyCompromise)
    with pytest.raises(EnrolmentForbiddenError):
        _reenrol(rt, chain)


def test_an_expired_certificate_renews_only_inside_the_window(rt: Runtime,
                                                              clock: FakeClock) -> None:
    chain, old = _device(rt)
    clock.now = old.not_after + timedelta(seconds=1)
    with pytest.raises(EnrolmentForbiddenError):
        _reenrol(rt, chain)  # the window is off by default
    assert "expired" in refusals(rt)[-1]
    rt.settings = rt.settings.model_copy(update={"renew_after_expiry": 3600})
    clock.now = old.not_after + timedelta(seconds=3600)
    assert _reenrol(rt, chain).record.device_id == "dev-a"
    chain_2, old_2 = _device(rt, "dev-c")
    clock.now = old_2.not_after + timedelta(seconds=3601)
    with pytest.raises(EnrolmentForbiddenError):
        _reenrol(rt, chain_2)


def test_a_certificate_iotsec_did_not_issue_cannot_renew(rt: Runtime,
                                                         clock: FakeClock) -> None:
    _, record = _device(rt)
    real = x509.load_der_x509_certificate(record.der)
    key = make_key()
    now = clock()
    foreign = self_signed(key, "dev-a", not_before=now - timedelta(days=1),
                          not_after=now + timedelta(days=1), serial=real.serial_number)
    lookalike = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
                 .public_key(key.public_key()).serial_number(real.serial_number)
                 .not_valid_before(real.not_valid_before_utc)
                 .not_valid_after(real.not_valid_after_utc).sign(key, hashes.SHA256()))
    for cert in (foreign, lookalike):
        with pytest.raises(EnrolmentForbiddenError, match="cannot be renewed"):
            _reenrol(rt, est.ClientChain((cert,)))
        assert "did not issue it" in refusals(rt)[-1]


def test_a_claim_or_server_certificate_cannot_renew(rt: Runtime, clock: FakeClock) -> None:
    templates.add_template(rt, Template.parse("sensors", id_from="serial-number"))
    made = factory(clock())
    claims.add_claim_ca(rt, "acme", made.pem, "sensors")
    with pytest.raises(EnrolmentForbiddenError):
        _reenrol(rt, made.claim(hardware_id="HW-1"))
    served = ensure_server_tls(rt, "127.0.0.1")
    server_cert = x509.load_pem_x509_certificates(served.chain_file.read_bytes())[0]
    with pytest.raises(EnrolmentForbiddenError):
        _reenrol(rt, est.ClientChain((server_cert,)))
    assert "not a device's certificate" in refusals(rt)[-1]


def test_a_disabled_device_cannot_renew(rt: Runtime) -> None:
    chain, _ = _device(rt)
    change_state(rt, "dev-a", DeviceState.DISABLED)
    with pytest.raises(EnrolmentForbiddenError):
        _reenrol(rt, chain)
    assert "device is disabled" in refusals(rt)[-1]


def test_a_key_another_device_holds_is_refused_on_renewal(rt: Runtime) -> None:
    victim_key = make_key()
    _device(rt, "victim", victim_key)
    chain, old = _device(rt)
    with pytest.raises(EnrolmentForbiddenError, match="another identity"):
        _reenrol(rt, chain, csr(victim_key))
    assert get_certificate(rt, old.serial).replaced_by is None  # still renewable
    _reenrol(rt, chain)


def test_renewal_keeps_the_profile_and_honours_the_grace_setting(rt: Runtime) -> None:
    templates.add_template(rt, Template.parse("gateways", profile="server"))
    info, secret = secrets.create_secret(rt, device_id=None, template="gateways",
                                         expires_in=timedelta(hours=1))
    first = est.enrol(rt, est.BasicCredential(info.id, secret), csr(cn="gw-1"), label=None,
                      source=None)
    assert isinstance(first, est.Issued)
    rt.settings = rt.settings.model_copy(update={"renew_grace": 0})
    chain = est.ClientChain((x509.load_der_x509_certificate(first.record.der),))
    renewed = _reenrol(rt, chain, label="gateways")
    cert = x509.load_der_x509_certificate(renewed.record.der)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert get_certificate(rt, first.record.serial).status(rt.now()) == "revoked"
    with pytest.raises(NotFoundError):
        _reenrol(rt, est.ClientChain((cert,)), label="no-such-label")


# --- serverkeygen -----------------------------------------------------------------------


def _key_of(key_der: bytes) -> Key:
    key = serialization.load_der_private_key(key_der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def _assert_never_kept(rt: Runtime, key: Key, key_der: bytes) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    stored = dump(rt)
    assert key_der not in stored and pem not in stored
    assert key_der.hex().encode() not in stored.lower()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        scalar = key.private_numbers().private_value.to_bytes(48, "big").lstrip(b"\0")
        assert scalar not in stored


def test_serverkeygen_with_a_secret_returns_a_key_that_matches_and_is_not_kept(
        rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    info, secret = secrets.create_secret(rt, device_id="dev-a", template=None,
                                         expires_in=timedelta(hours=1))
    proof = make_key()
    outcome = est.serverkeygen(rt, est.BasicCredential(info.id, secret), csr(proof),
                               label=None, source=SOURCE)
    assert not isinstance(outcome, est.Pending)
    key_der, issued = outcome
    key = _key_of(key_der)
    cert = x509.load_der_x509_certificate(issued.record.der)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key() != proof.public_key()
    _assert_never_kept(rt, key, key_der)
    (event,) = events(rt, "est.serverkeygen")
    assert event.actor == "dev-a" and event.subject == issued.record.serial
    assert events(rt, "est.enrolled") == []


@pytest.mark.parametrize(("proof_kind", "expected"), [("p384", ec.SECP384R1), ("rsa2048", None)])
def test_serverkeygen_follows_the_csr_key_kind(rt: Runtime, proof_kind: str,
                                               expected: type[ec.EllipticCurve] | None) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    info, secret = secrets.create_secret(rt, device_id="dev-a", template=None,
                                         expires_in=timedelta(hours=1))
    outcome = est.serverkeygen(rt, est.BasicCredential(info.id, secret),
                               csr(make_key(proof_kind)), label=None, source=None)
    assert not isinstance(outcome, est.Pending)
    key = _key_of(outcome[0])
    if expected is None:
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, expected)


def test_serverkeygen_with_the_devices_own_certificate_renews(rt: Runtime) -> None:
    chain, old = _device(rt)
    outcome = est.serverkeygen(rt, chain, csr(), label=None, source=SOURCE)
    assert not isinstance(outcome, est.Pending)
    key_der, issued = outcome
    assert issued.record.device_id == "dev-a"
    assert get_certificate(rt, old.serial).replaced_by == issued.record.serial
    assert x509.load_der_x509_certificate(issued.record.der).public_key() == (
        _key_of(key_der).public_key())
    _assert_never_kept(rt, _key_of(key_der), key_der)
    assert events(rt, "est.serverkeygen")[0].detail["replaces"] == old.serial  # type: ignore[index]


def test_serverkeygen_with_a_claim_and_with_approval(rt: Runtime, clock: FakeClock) -> None:
    templates.add_template(rt, Template.parse("gated", id_from="serial-number",
                                              require_approval=True))
    made = factory(clock())
    claims.add_claim_ca(rt, "acme", made.pem, "gated")
    claim = made.claim(hardware_id="HW-5")
    request = csr(make_key())
    assert est.serverkeygen(rt, claim, request, label=None, source=None) == est.Pending(
        "HW-5", rt.settings.est_retry_after)
    est.approve(rt, "HW-5")
    outcome = est.serverkeygen(rt, claim, request, label=None, source=None)
    assert not isinstance(outcome, est.Pending)
    assert outcome[1].record.device_id == "HW-5"
    _assert_never_kept(rt, _key_of(outcome[0]), outcome[0])


def test_serverkeygen_refuses_what_enrol_refuses(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    info, secret = secrets.create_secret(rt, device_id="dev-a", template=None,
                                         expires_in=timedelta(hours=1))
    secrets.revoke_secret(rt, info.id)
    with pytest.raises(EnrolmentAuthError):
        est.serverkeygen(rt, est.BasicCredential(info.id, secret), csr(), label=None,
                         source=None)
    assert events(rt, "est.refused")[-1].subject == "serverkeygen"
