"""CA rollover on the store (SQLite and PostgreSQL): ``rotate`` (same root, or a new root
cross-signed by the old one), the states (active, retiring, retired, expired), the chain
and trust bundle that follow from them (proved with ``openssl verify``), the CRLs of every
CA that is not expired, ``retire`` and its refusals, and another process's runtime moving
to the new CA."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from iotsec.app.audit import run_audit
from iotsec.app.enrol.renewal import renewable
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki import authorities as ca
from iotsec.app.pki.bundles import chain_pem, trust_bundle_pem
from iotsec.app.pki.ceremony import import_issuing, request_issuing, sign_intermediate_offline
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.pki.revocation import revoke
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import InitResult, OfflineRoot, init_home
from iotsec.config import Settings
from iotsec.errors import (
    CaImportError,
    CaStateError,
    EnrolmentForbiddenError,
    NotFoundError,
    OfflineKeyError,
    PkiError,
)
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority, cross_certificate, sign_intermediate
from iotsec.pki.keys import KeyType, LocalSigner
from iotsec.store import models as m
from iotsec.store.db import reading
from tests.conftest import FakeClock
from tests.helpers import make_csr

pytestmark = pytest.mark.openssl


def _issue(rt: Runtime, device_id: str) -> x509.Certificate:
    add_device(rt, NewDevice.parse(device_id))
    record = issue_from_csr(rt, device_id, make_csr())
    return x509.load_der_x509_certificate(record.der)


def _verify(openssl: str, tmp: Path, cert: x509.Certificate, trusted: str,
            untrusted: str | None = None) -> subprocess.CompletedProcess[str]:
    leaf, ca_file = tmp / "leaf.pem", tmp / "trusted.pem"
    leaf.write_bytes(cert.public_bytes(Encoding.PEM))
    ca_file.write_text(trusted)
    args = [openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(ca_file)]
    if untrusted is not None:
        (tmp / "untrusted.pem").write_text(untrusted)
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    return subprocess.run([*args, str(leaf)], capture_output=True, text=True, check=False,
                          timeout=30)


def _states(rt: Runtime) -> dict[int, tuple[str, str]]:
    return {a.id: (a.role, a.shown_state(rt.now())) for a in ca.list_authorities(rt)}


def test_rotate_keeps_both_trusted_and_issues_from_the_new_ca(rt: Runtime, openssl: str,
                                                               tmp_path: Path) -> None:
    old_cert = _issue(rt, "old-dev")
    old_id = rt.issuing_id()
    done = ca.rotate(rt)
    assert [a.id for a in done.retiring] == [old_id]
    assert done.root is None and done.cross is None
    assert _states(rt) == {1: ("root", "active"), old_id: ("issuing", "retiring"),
                           done.issuing.id: ("issuing", "active")}
    with reading(rt.engine) as conn:  # ``active`` stays coherent with the state
        active = dict(conn.execute(select(m.authorities.c.id, m.authorities.c.active)).all())
    assert active == {1: True, old_id: False, done.issuing.id: True}
    new_cert = _issue(rt, "new-dev")
    assert new_cert.issuer == done.issuing.certificate.subject != old_cert.issuer
    counts = {a.id: a.issued for a in ca.list_authorities(rt)}
    assert counts[old_id] == 1 and counts[done.issuing.id] == 1
    bundle = trust_bundle_pem(rt)
    for cert in (old_cert, new_cert):
        result = _verify(openssl, tmp_path, cert, bundle)
        assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result
    # The chain handed out is the new one: the old device's certificate does not chain.
    assert chain_pem(rt).count("BEGIN CERTIFICATE") == 2
    assert _verify(openssl, tmp_path, new_cert, chain_pem(rt)).returncode == 0
    assert _verify(openssl, tmp_path, old_cert, chain_pem(rt)).returncode != 0

    # Retired: out of the bundle, so the old certificate no longer verifies against it.
    (retired,) = ca.retire(rt, old_id)
    assert retired.state == "retired"
    assert _verify(openssl, tmp_path, old_cert, trust_bundle_pem(rt)).returncode != 0
    assert _verify(openssl, tmp_path, new_cert, trust_bundle_pem(rt)).returncode == 0


def test_retiring_and_retired_cas_keep_publishing_crls(rt: Runtime, openssl: str,
                                                       tmp_path: Path, clock: FakeClock) -> None:
    old_cert = _issue(rt, "victim")
    old_id = rt.issuing_id()
    ca.rotate(rt)
    clock.advance(timedelta(seconds=5))
    revoke(rt, f"{old_cert.serial_number:X}")
    clock.advance(timedelta(seconds=5))
    for state_change in (None, "retire"):
        if state_change == "retire":
            ca.retire(rt, old_id)
        published = ca.authority_crl(rt, old_id)
        crl = x509.load_der_x509_crl(published.der)
        assert crl.issuer == old_cert.issuer
        assert crl.get_revoked_certificate_by_serial_number(old_cert.serial_number) is not None
        old_ca = ca.get_authority(rt, old_id).certificate
        assert crl.is_signature_valid(old_ca.public_key())  # type: ignore[arg-type]
        # openssl: the old certificate is revoked per the retiring CA's CRL.
        (tmp_path / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
        (tmp_path / "ca.pem").write_text(ca.pem_of([old_ca, ca.get_authority(rt, 1)
                                                    .certificate]))
        (tmp_path / "leaf.pem").write_bytes(old_cert.public_bytes(Encoding.PEM))
        done = subprocess.run([openssl, "verify", "-crl_check", "-CAfile",
                               str(tmp_path / "ca.pem"), "-CRLfile", str(tmp_path / "crl.pem"),
                               str(tmp_path / "leaf.pem")], capture_output=True, text=True,
                              check=False, timeout=30)
        assert done.returncode != 0 and "revoked" in (done.stdout + done.stderr)
    # Once the CA is past its notAfter there is no CRL any more.
    clock.advance(timedelta(days=11 * 365))
    with pytest.raises(NotFoundError, match="expired"):
        ca.authority_crl(rt, old_id)
    assert _states(rt)[old_id] == ("issuing", "expired")


def test_new_root_is_cross_signed_for_devices_that_trust_only_the_old_root(
        rt: Runtime, openssl: str, tmp_path: Path) -> None:
    old_root = rt.authority("root").certificate
    old_cert = _issue(rt, "legacy")
    done = ca.rotate(rt, new_root=True)
    assert done.root is not None and done.cross is not None
    assert done.cross.certificate.subject == done.root.certificate.subject
    assert done.cross.certificate.issuer == old_root.subject
    assert {a.role for a in done.retiring} == {"root", "issuing"}
    assert rt.authority("root").certificate == done.root.certificate
    new_cert = _issue(rt, "fresh")
    only_old_root = ca.pem_of([old_root])
    # The chain with the cross certificate: a relying party that trusts only the old root
    # accepts the new CA's certificates.
    chain = chain_pem(rt, cross=True)
    assert chain.count("BEGIN CERTIFICATE") == 3
    assert chain_pem(rt).count("BEGIN CERTIFICATE") == 2  # a device's CA file: no cross
    result = _verify(openssl, tmp_path, new_cert, only_old_root, untrusted=chain)
    assert result.returncode == 0, result
    # Without it, it does not.
    no_cross = ca.pem_of([done.issuing.certificate, done.root.certificate])
    assert _verify(openssl, tmp_path, new_cert, only_old_root, untrusted=no_cross
                   ).returncode != 0
    # A device that trusts the new root only, and the old device during the overlap.
    assert _verify(openssl, tmp_path, new_cert, ca.pem_of([done.root.certificate]),
                   untrusted=chain).returncode == 0
    assert _verify(openssl, tmp_path, old_cert, trust_bundle_pem(rt)).returncode == 0
    # The old root keeps its CRL; the cross certificate has none of its own.
    old_root_id = next(a.id for a in done.retiring if a.role == "root")
    assert x509.load_der_x509_crl(ca.authority_crl(rt, old_root_id).der).issuer \
        == old_root.subject
    with pytest.raises(NotFoundError, match="cross"):
        ca.authority_crl(rt, done.cross.id)
    # A root with an issuing CA still trusted under it cannot be retired; once that one is
    # retired, retiring the root takes the cross certificate with it.
    old_issuing_id = next(a.id for a in done.retiring if a.role == "issuing")
    with pytest.raises(CaStateError, match="still has trusted issuing CAs"):
        ca.retire(rt, old_root_id)
    ca.retire(rt, old_issuing_id)
    retired = ca.retire(rt, old_root_id)
    assert {a.id for a in retired} == {old_root_id, done.cross.id}
    assert chain_pem(rt, cross=True).count("BEGIN CERTIFICATE") == 2
    assert old_root.subject not in {c.subject for c in ca.trusted_certificates(rt)}


def test_a_root_with_path_length_one_is_not_cross_signed(rt: Runtime) -> None:
    key = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    subject = enc.name("legacy root", "iotsec")
    now = rt.now()
    der = enc.build_certificate(enc.TbsCertificate(
        serial=7, issuer=subject, subject=subject, spki=enc.spki_der(key.public_key()),
        not_before=now - timedelta(days=1), not_after=now + timedelta(days=100),
        extensions=(enc.basic_constraints(ca=True, path_length=1),)), key)
    legacy = Authority.from_der(der, key)
    with pytest.raises(PkiError, match="would not verify") as refused:
        cross_certificate(legacy, rt.authority("root").certificate, now)
    assert "--no-cross" in refused.value.hint


def test_retire_refusals_change_nothing(rt: Runtime) -> None:
    before = _states(rt)
    with pytest.raises(CaStateError, match="active issuing"):
        ca.retire(rt, rt.issuing_id())
    with pytest.raises(CaStateError, match="active root"):
        ca.retire(rt, rt.authority_id("root"))
    with pytest.raises(NotFoundError):
        ca.retire(rt, 999)
    assert _states(rt) == before
    old = rt.issuing_id()
    ca.rotate(rt)
    ca.retire(rt, old)
    with pytest.raises(CaStateError, match="already retired"):
        ca.retire(rt, old)


def test_rotate_without_cross_and_with_another_key_type(rt: Runtime) -> None:
    done = ca.rotate(rt, new_root=True, cross=False, key_type=KeyType.ECDSA_P384)
    assert done.cross is None and done.root is not None
    assert done.issuing.key_type == "ecdsa-p384" == done.root.key_type
    assert len([c for c in ca.trusted_certificates(rt)
                if c.subject == c.issuer]) == 2  # both roots in the bundle


def test_another_process_moves_to_the_new_ca(settings: Settings, initialised: InitResult,
                                             rt: Runtime, clock: FakeClock) -> None:
    other = open_runtime(settings.model_copy(update={"hot_cache_seconds": 0.0}), clock=clock)
    try:
        before = other.authority("issuing").certificate
        done = ca.rotate(rt)
        assert other.authority("issuing").certificate == done.issuing.certificate != before
        assert other.issuing_id() == done.issuing.id
    finally:
        other.close()


def test_renewal_of_a_retired_cas_certificate_is_refused(rt: Runtime) -> None:
    cert = _issue(rt, "late")
    old = rt.issuing_id()
    ca.rotate(rt)
    assert renewable(rt, cert, rt.now()).device_id == "late"  # retiring: still renews
    ca.retire(rt, old)
    with pytest.raises(EnrolmentForbiddenError, match="retired"):
        renewable(rt, cert, rt.now())


def test_offline_root_ceremony_on_the_store(settings: Settings, clock: FakeClock,
                                            tmp_path: Path, openssl: str) -> None:
    key_file = tmp_path / "root.key"
    made = init_home(settings, now=clock(), offline_root=OfflineRoot(key_file, b"p" * 16),
                     store_passphrase=True)
    assert made.root_key_file == str(key_file)
    rt = open_runtime(settings, clock=clock)
    try:
        root_id = ca.resolve_ca(rt, "root")
        with pytest.raises(OfflineKeyError):
            rt.authority("root")
        with pytest.raises(OfflineKeyError):
            ca.rotate(rt)
        assert ca.authority_crl(rt, root_id).der  # signed before the key left
        request = request_issuing(rt)
        clock.advance(timedelta(minutes=1))
        der = sign_intermediate_offline(root_key=key_file.read_bytes(), passphrase=b"p" * 16,
                                        root_cert=ca.pem_of([ca.get_authority(rt, root_id)
                                                             .certificate]).encode(),
                                        csr=request.csr_der,
                                        now=clock())
        with pytest.raises(CaImportError, match="not issued by the root"):
            # Signed by the issuing CA instead of the root: refused, nothing written.
            wrong = sign_intermediate(rt.authority("issuing"), enc.spki_der(
                x509.load_der_x509_csr(request.csr_der).public_key()),
                x509.load_der_x509_csr(request.csr_der).subject.public_bytes(), clock())
            import_issuing(rt, wrong)
        new, old = import_issuing(rt, der)
        assert (new.state, old.state) == ("active", "retiring")
        assert rt.issuing_id() == new.id
        cert = _issue(rt, "ceremony-dev")
        result = _verify(openssl, tmp_path, cert, trust_bundle_pem(rt))
        assert result.returncode == 0, result
        # The root's CRL signed offline is what the broker and relying parties get.
        assert ca.authority_crl(rt, root_id).number == ca.authority_crl(rt, root_id).number
    finally:
        rt.close()


def test_the_api_server_certificate_follows_a_rotation(rt: Runtime) -> None:
    first = ensure_server_tls(rt, "127.0.0.1")
    again = ensure_server_tls(rt, "127.0.0.1")
    assert again.chain_file.read_bytes() == first.chain_file.read_bytes()  # reused
    done = ca.rotate(rt, new_root=True)
    rotated = ensure_server_tls(rt, "127.0.0.1")
    leaf, *intermediates = x509.load_pem_x509_certificates(rotated.chain_file.read_bytes())
    assert leaf.issuer == done.issuing.certificate.subject
    assert done.cross is not None
    assert intermediates == [done.issuing.certificate, done.cross.certificate]


def test_audit_tells_retiring_from_retired(rt: Runtime) -> None:
    cert = _issue(rt, "audited")
    old = rt.issuing_id()
    ca.rotate(rt)
    serial = f"{cert.serial_number:X}"

    def finding():  # type: ignore[no-untyped-def]
        result = run_audit(rt, None, record=False)
        (only,) = result.findings_of("audit/revoked-ca-active-certs")
        return only

    overlap = finding()
    assert overlap.severity.name == "MEDIUM" and "retiring" in overlap.message
    assert f"iotsec ca retire {old}" in overlap.fix and serial in overlap.fix
    ca.retire(rt, old)
    after = finding()
    assert after.severity.name == "HIGH" and "no longer active" in after.message
