"""The worked example of the README, step by step, checked with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.cli.support import Cli

pytestmark = pytest.mark.openssl


def _openssl(openssl: str, *args: str, cwd: Path, ok: bool = True
             ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def _new_csr(openssl: str, cwd: Path, name: str, cn: str = "x") -> Path:
    _openssl(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr",
             cwd=cwd)
    return cwd / f"{name}.csr"


def _split_chain(cli: Cli, cwd: Path) -> tuple[Path, Path]:
    """``iotsec ca chain > chain.pem``, split into the issuing CA and the root."""
    chain = cwd / "chain.pem"
    chain.write_text(cli.ok("ca", "chain").out)
    text = chain.read_text()
    end = "-----END CERTIFICATE-----\n"
    parts = [p + end for p in text.split(end) if p.strip()]
    assert len(parts) == 2
    (cwd / "issuing.pem").write_text(parts[0])
    (cwd / "root.pem").write_text(parts[1])
    issuing, root = (x509.load_pem_x509_certificate(p.encode()) for p in parts)
    assert issuing.issuer == root.subject
    assert root.issuer == root.subject
    return cwd / "issuing.pem", cwd / "root.pem"


def _serial(openssl: str, cwd: Path, cert: str) -> str:
    out = _openssl(openssl, "x509", "-noout", "-serial", "-in", cert, cwd=cwd).stdout.strip()
    assert out.startswith("serial=")
    return out.removeprefix("serial=")


def test_worked_example(cli: Cli, openssl: str, tmp_path: Path) -> None:
    cwd = tmp_path
    cli.ok("init", "--store-passphrase")
    cli.ok("device", "add", "sensor-0001", "--group", "plant-a", "--attr", "model=t100")
    _new_csr(openssl, cwd, "k")
    issued = cli.ok("cert", "issue", "sensor-0001", "--csr", "k.csr", "-o", "sensor.crt")
    assert "sensor.crt" in issued.err
    assert issued.out == ""
    issuing, root = _split_chain(cli, cwd)

    # The certificate chains to the root under strict X.509 checks.
    verify = _openssl(openssl, "verify", "-x509_strict", "-CAfile", str(root),
                      "-untrusted", str(issuing), "sensor.crt", cwd=cwd)
    assert verify.stdout.strip() == "sensor.crt: OK"

    # Its subject is the registered device id, not the CSR's CN=x.
    subject = _openssl(openssl, "x509", "-noout", "-subject", "-nameopt", "RFC2253",
                       "-in", "sensor.crt", cwd=cwd).stdout.strip()
    assert subject == "subject=CN=sensor-0001"
    cert = x509.load_pem_x509_certificate((cwd / "sensor.crt").read_bytes())
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == \
        ["sensor-0001"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:iotsec:device:sensor-0001" in san.get_values_for_type(
        x509.UniformResourceIdentifier)

    serial = _serial(openssl, cwd, "sensor.crt")
    assert int(serial, 16) == cert.serial_number

    # Listed, and expiring within 400 days (the default validity is a year).
    expiring = cli.json("cert", "list", "--expiring-within", "400d")
    assert [c["serial"] for c in expiring] == [serial]
    assert cli.json("cert", "list", "--expiring-within", "30d") == []
    shown = cli.json("device", "show", "sensor-0001")
    assert shown["state"] == "active"
    assert [c["serial"] for c in shown["certificates"]] == [serial]
    assert cli.ok("cert", "show", serial, "--pem").out == (cwd / "sensor.crt").read_text()

    # Before any revocation the CRL check passes.
    cli.ok("crl", "-o", "crl0.der")
    _openssl(openssl, "crl", "-inform", "DER", "-in", "crl0.der", "-out", "crl0.pem", cwd=cwd)
    _openssl(openssl, "verify", "-crl_check", "-CAfile", str(root), "-untrusted", str(issuing),
             "-CRLfile", "crl0.pem", "sensor.crt", cwd=cwd)

    # Revoke with the serial exactly as openssl printed it.
    revoked = cli.ok("cert", "revoke", serial, "--reason", "keyCompromise")
    assert serial in revoked.out
    cli.ok("crl", "-o", "crl.der")
    _openssl(openssl, "crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem", cwd=cwd)
    text = _openssl(openssl, "crl", "-in", "crl.pem", "-noout", "-text", cwd=cwd).stdout
    assert f"Serial Number: {serial}" in text
    assert "Key Compromise" in text
    check = _openssl(openssl, "verify", "-crl_check", "-CAfile", str(root),
                     "-untrusted", str(issuing), "-CRLfile", "crl.pem", "sensor.crt",
                     cwd=cwd, ok=False)
    assert check.returncode != 0
    assert "certificate revoked" in check.stdout + check.stderr

    # --pem prints the same CRL as openssl's conversion of the DER one.
    pem = cli.ok("crl", "--pem").out
    assert pem.startswith("-----BEGIN X509 CRL-----")
    assert pem == (cwd / "crl.pem").read_text()
    crl = x509.load_pem_x509_crl(pem.encode())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

    listed = cli.json("cert", "list")
    assert [(c["serial"], c["status"], c["revocation_reason"]) for c in listed] == \
        [(serial, "revoked", "keyCompromise")]
    assert cli.json("cert", "list", "--expiring-within", "400d") == []


def test_serial_forms_openssl_lower_case_and_colons(cli: Cli, openssl: str,
                                                     tmp_path: Path) -> None:
    cli.ok("init", "--store-passphrase")
    cli.ok("device", "add", "cam-1")
    serials = []
    for i in range(3):
        _new_csr(openssl, tmp_path, f"c{i}")
        cli.ok("cert", "issue", "cam-1", "--csr", f"c{i}.csr", "-o", f"c{i}.crt")
        serials.append(_serial(openssl, tmp_path, f"c{i}.crt"))
    upper, lower, colons = serials
    forms = {upper: upper, lower: lower.lower(),
             colons: ":".join(colons[i:i + 2] for i in range(0, len(colons), 2)).lower()}
    for serial, form in forms.items():
        assert cli.json("cert", "show", form)["serial"] == serial
        revoked = cli.json("cert", "revoke", form, "--reason", "keyCompromise")
        assert revoked == {"revoked": [serial], "reason": "keyCompromise", "already_revoked": []}
        # Any spelling of a revoked serial is revoked already the second time.
        assert "already revoked" in cli.ok("cert", "revoke", form).out
    cli.ok("crl", "-o", "crl.der")
    crl = x509.load_der_x509_crl((tmp_path / "crl.der").read_bytes())
    assert {e.serial_number for e in crl} == {int(s, 16) for s in serials}


def test_renew_from_the_command_line(cli: Cli, openssl: str, tmp_path: Path) -> None:
    cli.ok("init", "--store-passphrase")
    cli.ok("device", "add", "cam-2")
    _new_csr(openssl, tmp_path, "a")
    first = cli.json("cert", "issue", "cam-2", "--csr", "a.csr")
    _new_csr(openssl, tmp_path, "b")
    second = cli.json("cert", "renew", first["serial"], "--csr", "b.csr", "-o", "b.crt",
                      "--grace", "7d")
    assert second["device_id"] == "cam-2"
    assert (tmp_path / "b.crt").read_text() == second["pem"]
    old = cli.json("cert", "show", first["serial"])
    assert old["status"] == "superseded"
    assert old["replaced_by"] == second["serial"]
    _split_chain(cli, tmp_path)
    _openssl(openssl, "verify", "-x509_strict", "-CAfile", "root.pem", "-untrusted",
             "issuing.pem", "b.crt", cwd=tmp_path)
