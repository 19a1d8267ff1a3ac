"""Firmware keys in the home's key custody (the file key store here; the PKCS#11 token in
tests/custody_hsm): ``keygen --label``, ``sign --key-label``, ``public-key --label``, and
``keys list``, through the whole ``iotsec`` app; imgtool verifies what they sign. Key
files (``-o``) are now scrypt PKCS#8, and older PBKDF2 key files still sign."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from iotsec.app.runtime import open_runtime
from iotsec.config import Settings
from iotsec.firmware import TrustedKey, verify_image
from iotsec.firmware.image_keys import FirmwareKeyType
from iotsec.pki import pkcs8
from iotsec.store import models as m
from tests.cli.support import Cli, use_home
from tests.firmware.support import PASSPHRASE, run_imgtool


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = use_home(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE", PASSPHRASE)
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], home: Path) -> Cli:
    return Cli(capsys)


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(os.urandom(12_000))
    return path


def _events(home: Path) -> list[tuple[str, str, dict[str, object]]]:
    rt = open_runtime(Settings(home=home))
    try:
        with rt.engine.connect() as conn:
            rows = conn.execute(select(m.events.c.kind, m.events.c.subject,
                                       m.events.c.detail)).all()
    finally:
        rt.close()
    return [(r.kind, r.subject,
             r.detail if isinstance(r.detail, dict) else json.loads(r.detail or "{}"))
            for r in rows]


def test_custody_keys_sign_images_imgtool_verifies(cli: Cli, home: Path, tmp_path: Path,
                                                   firmware: Path,
                                                   key_type: FirmwareKeyType) -> None:
    label = f"fw-{key_type.value}"
    made = cli.json("firmware", "keygen", "--type", key_type.value, "--label", label)
    assert (made["label"], made["backend"], made["type"]) == (label, "file", key_type.value)
    pub = tmp_path / "pub.pem"
    pub.write_text(made["public_key_pem"])
    # Stored in the home's key directory, encrypted with scrypt, not next to the command.
    stored = list(home.rglob(f"{label}.image-key.pem"))
    assert len(stored) == 1 and pkcs8.uses_scrypt(pkcs8.pem_body(stored[0].read_bytes()))

    signed = cli.json("firmware", "sign", str(firmware), "img.bin", "--key-label", label,
                      "--version", "1.2.3+4", "--security-counter", "3", "--pad-header",
                      "--align", "4", "--slot-size", "0x20000")
    image = tmp_path / "img.bin"
    out = run_imgtool("verify", "-k", pub, image).stdout
    assert "Image was correctly validated" in out and f"Image digest: {signed['sha256']}" in out
    result = verify_image(image.read_bytes(), [TrustedKey.from_bytes(pub.read_bytes())], 3)
    assert result.key.key_id == made["key_id"] == signed["key"]["key_id"]
    assert cli.json("firmware", "verify", "img.bin", "--key", str(pub))["valid"] is True

    # The public key on demand, from custody, in both commands that export it.
    assert cli.ok("firmware", "public-key", "--label", label).out == made["public_key_pem"]
    assert cli.ok("keys", "export-public", label).out == made["public_key_pem"]
    listed = {e["label"]: e for e in cli.json("keys", "list")}
    assert (listed[label]["purpose"], listed[label]["type"]) == ("firmware", key_type.value)

    uses = [(kind, subject, detail) for kind, subject, detail in _events(home)
            if kind in ("key.use", "key.generate") and subject == label]
    assert [u[0] for u in uses] == ["key.generate", "key.use"]
    assert uses[1][2] == {"operation": "sign-image", "backend": "file"}


def _usage(cli: Cli, *args: str) -> str:
    """A usage error: exit 2, the reason on stderr, nothing written."""
    result = cli(*args)
    assert result.code == 2 and "Traceback" not in result.err, result
    return " ".join(result.err.split())


def test_custody_option_errors(cli: Cli, firmware: Path) -> None:
    assert "either --label" in _usage(cli, "firmware", "keygen", "--type", "ed25519")
    assert "either --label" in _usage(cli, "firmware", "keygen", "--label", "a", "-o", "k.pem")
    assert "no passphrase" in _usage(cli, "firmware", "keygen", "--label", "a",
                                     "--generate-passphrase")
    cli.ok("firmware", "keygen", "--label", "fw-a", "--type", "ed25519")
    assert "already exists" in cli.refused("firmware", "keygen", "--label", "fw-a")
    sign = ("firmware", "sign", str(firmware), "out.bin", "--version", "1.0.0", "--pad-header")
    assert "either --key" in _usage(cli, *sign)
    assert "either --key" in _usage(cli, *sign, "--key-label", "fw-a", "--key", "k.pem")
    assert "no key labelled 'missing'" in cli.refused(*sign, "--key-label", "missing")
    ca_label = next(e["label"] for e in cli.json("keys", "list") if e["purpose"] == "ca-root")
    refused = cli.refused(*sign, "--key-label", ca_label)
    assert "certificate-signing key, not a firmware signing key" in refused
    assert not Path("out.bin").exists()
    assert "either a KEY file" in _usage(cli, "firmware", "public-key")


def test_key_files_are_scrypt_and_old_pbkdf2_files_still_sign(
        cli: Cli, tmp_path: Path, firmware: Path, openssl: str) -> None:
    cli.ok("firmware", "keygen", "--type", "ecdsa-p256", "-o", "k.pem",
           "--public-out", "pub.pem")
    pem = (tmp_path / "k.pem").read_bytes()
    assert pkcs8.uses_scrypt(pkcs8.pem_body(pem))
    proc = subprocess.run([openssl, "pkey", "-in", "k.pem", "-passin", f"pass:{PASSPHRASE}",
                           "-pubout"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout == (tmp_path / "pub.pem").read_text()

    # A key file written by an earlier version (PBKDF2) signs unchanged.
    key = FirmwareKeyType.ED25519.generate()
    (tmp_path / "old.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    cli.ok("firmware", "sign", str(firmware), "old.bin", "--key", "old.pem", "--version",
           "1.0.0", "--pad-header")
    assert verify_image((tmp_path / "old.bin").read_bytes(), [TrustedKey.of(key.public_key())])
