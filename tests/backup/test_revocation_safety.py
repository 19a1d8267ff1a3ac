"""After a restore, CRL numbers only increase (RFC 5280 5.2.3) and no certificate escapes
revocation: checked with OpenSSL reading the CRLs and verifying against them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from iotsec.app.backup import create_backup
from iotsec.app.identity import devices
from iotsec.app.identity.cert_import import import_certificates
from iotsec.app.pki import issuance, revocation
from iotsec.app.pki.crl import current_crl
from iotsec.app.restore import CRL_NUMBER_JUMP, parse_published_crl, restore_backup
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import NotFoundError, PkiError
from iotsec.pki.x509 import to_pem
from tests.backup.conftest import PASSPHRASE, populate
from tests.conftest import FakeClock
from tests.helpers import make_csr, make_key, self_signed


def _crl_number(openssl: str, der: bytes, tmp_path: Path) -> int:
    path = tmp_path / "number.crl"
    path.write_bytes(der)
    out = subprocess.run([openssl, "crl", "-inform", "DER", "-in", str(path), "-noout",
                          "-crlnumber"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("crlNumber=0x"), out
    return int(out.strip().split("=0x")[1], 16)


def _restored(tmp_path: Path, name: str, clock: FakeClock) -> Runtime:
    return open_runtime(Settings(home=tmp_path / name), clock=clock)


def test_crl_numbers_only_increase_after_a_restore(
        settings: Settings, rt: Runtime, tmp_path: Path, clock: FakeClock,
        openssl: str) -> None:
    serials = populate(rt)
    before = _crl_number(openssl, current_crl(rt, force=True).der, tmp_path)
    create_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    # After the backup: a revocation and two more CRLs that the backup never sees.
    revocation.revoke(rt, serials["valid"])
    current_crl(rt)
    published = current_crl(rt, force=True).der
    after = _crl_number(openssl, published, tmp_path)
    assert after == before + 2

    # Told nothing, the restore jumps far past anything published since.
    restore_backup(Settings(home=tmp_path / "jumped"), tmp_path / "home.bak", PASSPHRASE)
    jumped = _restored(tmp_path, "jumped", clock)
    try:
        number = _crl_number(openssl, current_crl(jumped).der, tmp_path)
        assert number == before + CRL_NUMBER_JUMP + 1 > after
    finally:
        jumped.close()

    # Given the last published CRL, numbering continues right above it, and the revocation
    # made after the backup stays on the CRL.
    result = restore_backup(Settings(home=tmp_path / "continued"), tmp_path / "home.bak",
                            PASSPHRASE, published=[parse_published_crl("last.crl", published)])
    assert result.revocations_applied == [serials["valid"]]
    continued = _restored(tmp_path, "continued", clock)
    try:
        crl = current_crl(continued)
        assert _crl_number(openssl, crl.der, tmp_path) == after + 1
        revoked = {format(e.serial_number, "X") for e in x509.load_der_x509_crl(crl.der)}
        assert {serials["valid"].lstrip("0"), serials["revoked"].lstrip("0")} <= revoked
    finally:
        continued.close()

    # Given a floor, numbering continues above it.
    restore_backup(Settings(home=tmp_path / "floor"), tmp_path / "home.bak", PASSPHRASE,
                   min_crl_number=after + 40)
    floor = _restored(tmp_path, "floor", clock)
    try:
        assert _crl_number(openssl, current_crl(floor).der, tmp_path) == after + 41
    finally:
        floor.close()


def test_a_published_crl_of_another_ca_is_refused(
        settings: Settings, rt: Runtime, tmp_path: Path) -> None:
    populate(rt)
    create_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    key = make_key()
    cert = self_signed(key, "other CA", not_before=rt.now(), not_after=rt.now())
    from cryptography.hazmat.primitives import hashes

    other = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
             .last_update(rt.now()).next_update(rt.now())
             .add_extension(x509.CRLNumber(7), critical=False).sign(key, hashes.SHA256()))
    given = parse_published_crl("other.crl", other.public_bytes(Encoding.DER))
    from iotsec.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not signed by a CA of this backup"):
        restore_backup(Settings(home=tmp_path / "r"), tmp_path / "home.bak", PASSPHRASE,
                       published=[given])
    assert not (tmp_path / "r").exists()


def _verify(openssl: str, tmp_path: Path, rt: Runtime,
            leaf_pem: str) -> subprocess.CompletedProcess[str]:
    files = {"root.pem": rt.authority("root").certificate.public_bytes(Encoding.PEM),
             "issuing.pem": rt.authority("issuing").certificate.public_bytes(Encoding.PEM),
             "crl.pem": to_pem(current_crl(rt).der, "X509 CRL"),
             "leaf.pem": leaf_pem.encode("ascii")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return subprocess.run(
        [openssl, "verify", "-crl_check", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
         str(tmp_path / "issuing.pem"), "-CRLfile", str(tmp_path / "crl.pem"),
         str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False)


def test_a_certificate_issued_after_the_backup_is_imported_and_revoked(
        settings: Settings, rt: Runtime, tmp_path: Path, clock: FakeClock,
        openssl: str) -> None:
    populate(rt)
    create_backup(settings, tmp_path / "home.bak", PASSPHRASE)
    devices.add_device(rt, devices.NewDevice.parse("dev-late"))
    late = issuance.issue_from_csr(rt, "dev-late", make_csr())

    restore_backup(Settings(home=tmp_path / "restored"), tmp_path / "home.bak", PASSPHRASE)
    restored = _restored(tmp_path, "restored", clock)
    try:
        with pytest.raises(NotFoundError):  # unknown, so it could never be revoked
            revocation.revoke(restored, late.serial)
        assert _verify(openssl, tmp_path, restored, late.pem).returncode == 0

        result = import_certificates(restored, [("late.pem", late.pem.encode("ascii"))])
        assert result.imported == [(late.serial, "dev-late")]
        assert result.devices_created == ["dev-late"]
        again = import_certificates(restored, [("late.der", late.der)])
        assert again.already_known == [late.serial] and not again.imported

        revocation.revoke(restored, late.serial)
        checked = _verify(openssl, tmp_path, restored, late.pem)
        assert checked.returncode != 0
        assert "certificate revoked" in checked.stdout + checked.stderr
    finally:
        restored.close()


def test_import_refuses_a_certificate_of_another_ca(rt: Runtime) -> None:
    populate(rt)
    stranger = self_signed(make_key(), "dev-x", not_before=rt.now(), not_after=rt.now())
    with pytest.raises(PkiError, match="was not issued by this home's issuing CA"):
        import_certificates(rt, [("x.pem", stranger.public_bytes(Encoding.PEM))])
    with pytest.raises(NotFoundError):
        devices.get_device(rt, "dev-x")
