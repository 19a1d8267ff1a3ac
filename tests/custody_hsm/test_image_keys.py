"""Firmware signing keys inside a SoftHSM2 token: generated non-extractable for every MCUboot
type (ECDSA P-256 with CKM_ECDSA, Ed25519 with CKM_EDDSA, RSA-2048/3072 with
CKM_RSA_PKCS_PSS), images signed through the token pass imgtool and iotsec's verifier, one
purpose per key, the CLI end to end, and the login deferred to the first key use."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import select

from iotsec.app.identity import devices
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.cli import main as cli_main
from iotsec.config import Settings
from iotsec.custody.pkcs11 import Pkcs11KeyStore
from iotsec.custody.pkcs11_kek import Pkcs11KekStore
from iotsec.custody.pkcs11_token import Pkcs11Token, connect
from iotsec.errors import (
    KeyTypeMismatchError,
    Pkcs11KeyNotFoundError,
    Pkcs11PinError,
)
from iotsec.firmware import SignOptions, TrustedKey, sign_image, verify_image
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.image_keys import FirmwareKeyType, public_pem
from iotsec.pki.keys import KeyType
from iotsec.store import models as m
from tests.cli.support import Result, use_home
from tests.custody_hsm.conftest import Hsm
from tests.firmware.support import imgtool_path, run_imgtool

KINDS = list(FirmwareKeyType)
OPTIONS = SignOptions(version=ImageVersion.parse("1.2.3+4"), header_size=0x200,
                      pad_header=True, security_counter=5)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_token_keys_sign_images_imgtool_and_iotsec_verify(
        kind: FirmwareKeyType, token: Pkcs11Token, tmp_path: Path) -> None:
    imgtool_path()
    used: list[tuple[str, str]] = []
    store = Pkcs11KeyStore(token, on_use=lambda label, op: used.append((label, op)))
    signer = store.generate_image_key("fw", kind)
    assert signer.key_type is kind

    # Inside the token: sensitive, never extractable, sign-only.
    with token.session() as slot:
        private = slot.handle.get_key(object_class=ObjectClass.PRIVATE_KEY, label="fw")
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.DECRYPT] is False and private[Attribute.UNWRAP] is False

    firmware = os.urandom(10_000)
    image = sign_image(firmware, signer, OPTIONS)
    assert used == [("fw", "sign-image")]
    trusted = TrustedKey.of(signer.public_key())
    result = verify_image(image, [trusted], 5)
    assert (str(result.version), result.security_counter) == ("1.2.3+4", 5)

    (tmp_path / "img.bin").write_bytes(image)
    (tmp_path / "pub.pem").write_bytes(public_pem(trusted.public_key))
    out = run_imgtool("verify", "-k", tmp_path / "pub.pem", tmp_path / "img.bin").stdout
    assert "Image was correctly validated" in out, out
    # imgtool really checks: a changed body fails.
    tampered = bytearray(image)
    tampered[0x300] ^= 1
    (tmp_path / "bad.bin").write_bytes(bytes(tampered))
    bad = run_imgtool("verify", "-k", tmp_path / "pub.pem", tmp_path / "bad.bin", check=False)
    assert bad.returncode != 0

    # Another connection (another process) finds the same key and signs with it.
    again = Pkcs11KeyStore(token).load_image_key("fw")
    assert TrustedKey.of(again.public_key()).key_hash == trusted.key_hash
    verify_image(sign_image(firmware, again, OPTIONS), [trusted])
    listed = {k.label: k for k in store.list()}
    assert (listed["fw"].kind, listed["fw"].key_type) == ("image-signing", kind.value)
    assert listed["fw"].extractable is False


def test_one_purpose_per_token_key(token: Pkcs11Token) -> None:
    store = Pkcs11KeyStore(token)
    store.generate("ca", KeyType.ECDSA_P256)
    store.generate_image_key("fw-p256", FirmwareKeyType.ECDSA_P256)
    store.generate_image_key("fw-ed", FirmwareKeyType.ED25519)
    kek = Pkcs11KekStore(token).generate()
    with pytest.raises(KeyTypeMismatchError, match="certificate-signing key"):
        store.load_image_key("ca")
    for label in ("fw-p256", "fw-ed"):
        with pytest.raises(KeyTypeMismatchError, match="firmware signing key"):
            Pkcs11KeyStore(token).load(label)
    with pytest.raises(KeyTypeMismatchError, match="secret"):
        store.load_image_key(kek.key_id.removeprefix("hsm:"))
    with pytest.raises(Pkcs11KeyNotFoundError, match="no key labelled 'nope'"):
        store.load_image_key("nope")
    with pytest.raises(Exception, match="already exists"):
        store.generate_image_key("ca", FirmwareKeyType.ED25519)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def hsm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hsm: Hsm) -> Path:
    """A home initialised with its keys in the token, configured through the environment."""
    home = use_home(monkeypatch, tmp_path / "home", initialise=False)
    init_home(hsm.settings(Settings(home=home)), store_passphrase=True)
    for name, value in {**hsm.env(), "IOTSEC_KEYSTORE": "pkcs11"}.items():
        monkeypatch.setenv(name, value)
    _end_logins(hsm)
    return home


def _end_logins(hsm: Hsm) -> None:
    """Finalise the module: a login is per process and token, and each command here runs
    in this one process (as separate ``iotsec`` processes would not share it)."""
    pkcs11.unload(str(hsm.module))


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         *args: str) -> Result:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    capsys.readouterr()
    code = cli_main.main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return Result(code, out, err)


def test_cli_keygen_sign_and_list_in_the_token(
        hsm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    imgtool_path()
    made = _run(monkeypatch, capsys, "firmware", "keygen", "--type", "ed25519", "--label",
                "fw-ed", "--public-out", "pub.pem", "--json")
    assert made.code == 0, made
    info = json.loads(made.out)
    assert (info["backend"], info["type"]) == ("pkcs11", "ed25519")
    (tmp_path / "fw.bin").write_bytes(os.urandom(5000))
    signed = _run(monkeypatch, capsys, "firmware", "sign", "fw.bin", "img.bin",
                  "--key-label", "fw-ed", "--version", "2.0.0", "--pad-header")
    assert signed.code == 0, signed
    assert "Image was correctly validated" in run_imgtool(
        "verify", "-k", tmp_path / "pub.pem", tmp_path / "img.bin").stdout
    shown = _run(monkeypatch, capsys, "firmware", "public-key", "--label", "fw-ed")
    assert shown.out == (tmp_path / "pub.pem").read_text()
    listed = _run(monkeypatch, capsys, "keys", "list", "--json")
    entry = next(e for e in json.loads(listed.out) if e["label"] == "fw-ed")
    assert (entry["purpose"], entry["backend"], entry["type"], entry["extractable"]) == (
        "firmware", "pkcs11", "ed25519", False)
    rt = open_runtime(Settings())
    try:
        with rt.engine.connect() as conn:
            rows = conn.execute(select(m.events.c.kind, m.events.c.detail)
                                .where(m.events.c.subject == "fw-ed")).all()
    finally:
        rt.close()
    details = [(r.kind, r.detail if isinstance(r.detail, dict) else json.loads(r.detail))
               for r in rows]
    assert ("key.use", {"operation": "sign-image", "backend": "pkcs11"}) in details


def test_login_waits_for_the_first_key_use(
        hsm_home: Path, hsm: Hsm, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ok = _run(monkeypatch, capsys, "firmware", "keygen", "--type", "ecdsa-p256", "--label",
              "fw-p256")
    assert ok.code == 0, ok
    _end_logins(hsm)
    monkeypatch.setenv("IOTSEC_PKCS11_PIN", "0000-wrong-pin")
    # A command that signs nothing works with a wrong PIN, and opens no session.
    listed = _run(monkeypatch, capsys, "device", "list", "--json")
    assert listed.code == 0, listed
    rt: Runtime = open_runtime(Settings())
    try:
        devices.add_device(rt, devices.NewDevice.parse("d1"))
        assert isinstance(rt.keys, Pkcs11KeyStore) and not rt.keys.token.connected
        with pytest.raises(Pkcs11PinError):
            rt.keys.load_image_key("fw-p256")
    finally:
        rt.close()
    # A command that signs fails on the PIN, in one line, without echoing it.
    Path("fw.bin").write_bytes(b"\x01" * 100)
    refused = _run(monkeypatch, capsys, "firmware", "sign", "fw.bin", "img.bin",
                   "--key-label", "fw-p256", "--version", "1.0.0", "--pad-header")
    assert refused.code == 1 and "refused the PIN" in refused.err, refused
    assert "0000-wrong-pin" not in refused.out + refused.err
    assert not Path("img.bin").exists()


def test_eager_connect_still_checks_the_pin(hsm: Hsm) -> None:
    with pytest.raises(Pkcs11PinError):
        connect(hsm.config(pin="0000-wrong"))
    lazy = connect(hsm.config(pin="0000-wrong"), lazy=True)
    assert not lazy.connected
    with pytest.raises(Pkcs11PinError):
        lazy.exists("anything")
    lazy.close()
