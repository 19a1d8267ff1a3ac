"""``iotsec cert issue ID --keygen -o DIR``: key, certificate, chain and PKCS#12 files."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.cli.support import Cli

pytestmark = pytest.mark.openssl


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _openssl_p12(openssl: str, p12: Path, passphrase: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([openssl, "pkcs12", "-in", str(p12), "-passin", f"pass:{passphrase}",
                           "-nokeys"], capture_output=True, text=True, timeout=60, check=False)


def _check_bundle(out: Path, device: str, passphrase: str, openssl: str) -> x509.Certificate:
    key_file, crt, chain, p12 = (out / f"{device}.key", out / f"{device}.crt",
                                 out / "chain.pem", out / f"{device}.p12")
    assert _mode(key_file) == 0o600
    assert _mode(p12) == 0o600
    assert _mode(out) & 0o077 == 0
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert _spki(key.public_key()) == _spki(cert.public_key())
    assert len(x509.load_pem_x509_certificates(chain.read_bytes())) == 2

    proc = _openssl_p12(openssl, p12, passphrase)
    assert proc.returncode == 0, proc.stderr
    in_p12 = x509.load_pem_x509_certificates(proc.stdout.encode())
    assert cert in in_p12
    assert _openssl_p12(openssl, p12, passphrase + "-wrong").returncode != 0

    p12_key, p12_cert, _ = pkcs12.load_key_and_certificates(p12.read_bytes(),
                                                            passphrase.encode())
    assert p12_cert == cert
    assert p12_key is not None
    assert _spki(p12_key.public_key()) == _spki(cert.public_key())
    return cert


def test_keygen_with_a_generated_passphrase(cli: Cli, ready: object, tmp_path: Path,
                                            openssl: str) -> None:
    cli.ok("device", "add", "meter-1")
    out = tmp_path / "bundle"
    result = cli.ok("cert", "issue", "meter-1", "--keygen", "-o", str(out))
    assert "shown once" in result.err
    passphrase = result.out.strip().splitlines()[-1].strip()
    assert len(passphrase) >= 16
    assert sorted(p.name for p in out.iterdir()) == \
        ["chain.pem", "meter-1.crt", "meter-1.key", "meter-1.p12"]
    cert = _check_bundle(out, "meter-1", passphrase, openssl)
    listed = cli.json("cert", "list", "--device", "meter-1")
    assert [c["serial"] for c in listed] == [f"{cert.serial_number:X}".zfill(
        len(listed[0]["serial"]))]

    # Issuing into the same directory again is refused before anything is issued.
    message = cli.refused("cert", "issue", "meter-1", "--keygen", "-o", str(out))
    assert "already exists" in message
    assert len(cli.json("cert", "list")) == 1


def test_keygen_with_the_passphrase_from_the_environment(
        cli: Cli, ready: object, tmp_path: Path, openssl: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    passphrase = "pkcs12 passphrase from env"
    monkeypatch.setenv("IOTSEC_P12_PASSPHRASE", passphrase)
    cli.ok("device", "add", "meter-2")
    out = tmp_path / "deep" / "bundle"
    data = cli.json("cert", "issue", "meter-2", "--keygen", "-o", str(out), "--key-type",
                    "rsa-3072")
    assert data["pkcs12_passphrase"] is None
    assert set(data["files"]) == {"meter-2.key", "meter-2.crt", "chain.pem", "meter-2.p12"}
    cert = _check_bundle(out, "meter-2", passphrase, openssl)
    assert cert.public_key().key_size == 3072  # type: ignore[union-attr]
    assert data["status"] == "valid"
