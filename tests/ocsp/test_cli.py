"""``iotsec ocsp check`` against the home's own responder (no URL anywhere), and its
refusals: one line, no traceback."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from tests.cli.support import Cli
from tests.helpers import make_csr


def test_check_asks_the_homes_own_responder(cli: Cli, ready: object, tmp_path: Path) -> None:
    cli.ok("device", "add", "dev-1")
    (tmp_path / "dev.csr").write_bytes(make_csr())
    cli.ok("cert", "issue", "dev-1", "--csr", str(tmp_path / "dev.csr"), "--output",
           str(tmp_path / "dev.pem"))
    cert = x509.load_pem_x509_certificate((tmp_path / "dev.pem").read_bytes())
    serial = f"{cert.serial_number:X}"
    good = cli.json("ocsp", "check", serial)
    assert good["status"] == "good" and good["url"] == "local" and good["nonce_checked"]
    assert good["signed_by"] == "delegated"
    cli.ok("cert", "revoke", serial, "--reason", "cessationOfOperation")
    revoked = cli.json("ocsp", "check", "--cert", str(tmp_path / "dev.pem"))
    assert revoked["status"] == "revoked" and revoked["reason"] == "cessationOfOperation"
    table = cli.ok("ocsp", "check", serial).out
    assert serial in table and "revoked" in table


def test_check_refusals(cli: Cli, ready: object, tmp_path: Path) -> None:
    assert "SERIAL" in cli.refused("ocsp", "check")
    assert "does not exist" in cli.refused("ocsp", "check", "--cert", str(tmp_path / "nope"))
    (tmp_path / "junk.pem").write_bytes(b"not a certificate")
    assert "PEM or DER" in cli.refused("ocsp", "check", "--cert", str(tmp_path / "junk.pem"))
    assert "no certificate with serial" in cli.refused("ocsp", "check", "0A0B0C")
    assert "http://" in cli.refused("ocsp", "check", "0A0B0C", "--url", "ftp://x")
