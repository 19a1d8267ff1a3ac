"""Interoperability with the reference imgtool, in both directions, for every key type.

- Images signed by ``iotsec firmware sign`` pass ``imgtool verify -k PUB`` (and imgtool
  rejects them under another key or with a changed body: its check is real).
- Images signed by ``imgtool sign`` (version, security counter, header size, pad-header,
  align, slot size, pad, dependencies) pass ``iotsec firmware verify``.
- ``imgtool dumpinfo`` and ``iotsec firmware inspect`` read the same header and TLVs;
  ``imgtool getpubhash`` and iotsec compute the same key hash.
- Ed25519 signatures are deterministic, so both tools write byte-identical images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from iotsec.errors import (
    MissingSignatureError,
    SecurityCounterError,
    UnknownTlvError,
    UnsupportedImageError,
)
from iotsec.firmware import TrustedKey, inspect_image, verify_image
from iotsec.firmware.image import ImageFlag
from iotsec.firmware.image_keys import FirmwareKeyType
from tests.cli.support import Cli
from tests.firmware.support import run_imgtool

SIGN_OPTIONS = ["--header-size", "0x200", "--pad-header", "--align", "4",
                "--slot-size", "0x20000", "--pad", "-d", "(1,1.0.0)"]


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(os.urandom(20_000) + b"end of firmware")
    return path


def _imgtool_key(tmp_path: Path, kind: FirmwareKeyType, name: str = "it") -> tuple[Path, Path]:
    """An imgtool key pair: private (unencrypted, as imgtool writes it) and public PEM."""
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}-pub.pem"
    run_imgtool("keygen", "-t", kind.value, "-k", private)
    run_imgtool("getpub", "-k", private, "-e", "pem", "-o", public)
    return private, public


def _dumpinfo(image: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_imgtool("dumpinfo", "-f", "json", image).stdout)
    return data


# --------------------------------------------------------------------------- iotsec -> imgtool


def test_iotsec_signed_images_pass_imgtool_verify(fw_cli: Cli, key_type: FirmwareKeyType,
                                                  tmp_path: Path, firmware: Path) -> None:
    fw_cli.ok("firmware", "keygen", "--type", key_type.value, "-o", "k.pem",
              "--public-out", "pub.pem")
    signed = fw_cli.json("firmware", "sign", str(firmware), "img.bin", "--key", "k.pem",
                         "--version", "1.2.3+4", "--security-counter", "7", *SIGN_OPTIONS)
    image = tmp_path / "img.bin"
    assert image.stat().st_size == 0x20000

    out = run_imgtool("verify", "-k", "pub.pem", image).stdout
    assert "Image was correctly validated" in out, out
    assert "Image version: 1.2.3+4" in out
    assert f"Image digest: {signed['sha256']}" in out

    # The reference really checks: another key of the same type, or a changed byte, fails.
    fw_cli.ok("firmware", "keygen", "--type", key_type.value, "-o", "k2.pem",
              "--public-out", "pub2.pem")
    other = run_imgtool("verify", "-k", "pub2.pem", image, check=False)
    assert other.returncode != 0 and "No signature found" in other.stdout, other
    tampered = tmp_path / "tampered.bin"
    data = bytearray(image.read_bytes())
    data[0x300] ^= 1
    tampered.write_bytes(bytes(data))
    changed = run_imgtool("verify", "-k", "pub.pem", tampered, check=False)
    assert changed.returncode != 0 and "invalid hash" in changed.stdout, changed

    # Same key hash as imgtool's getpubhash.
    run_imgtool("getpubhash", "-k", "pub.pem", "-e", "raw", "-o", tmp_path / "hash.bin")
    assert (tmp_path / "hash.bin").read_bytes().hex() == signed["key"]["key_hash"]

    # Same header and TLVs as imgtool's dumpinfo.
    ours = fw_cli.json("firmware", "inspect", str(image))
    theirs = _dumpinfo(image)
    for field in ("magic", "load_addr", "hdr_size", "protected_tlv_size", "img_size", "flags",
                  "version"):
        assert ours["header"][field] == theirs["header"][field], field
    for mine, ref in ((ours["protected_tlvs"], theirs["tlv_area"]["tlvs_prot"]),
                      (ours["tlvs"], theirs["tlv_area"]["tlvs"])):
        assert [(t["type"], t["len"], t["data"]) for t in mine] == [
            (t["type"], t["len"], t["data"]) for t in ref]
    assert theirs["trailer"]["magic"] == "77c295f360d2ef7f3552500f2cb67980"
    assert ours["trailer"]["image_ok"] == theirs["trailer"]["image_ok"] == 0xFF


# --------------------------------------------------------------------------- imgtool -> iotsec


def test_imgtool_signed_images_pass_iotsec_verify(fw_cli: Cli, key_type: FirmwareKeyType,
                                                  tmp_path: Path, firmware: Path) -> None:
    private, public = _imgtool_key(tmp_path, key_type)
    image = tmp_path / "it.bin"
    run_imgtool("sign", "-k", private, "--version", "2.3.4+5", "--security-counter", "9",
                *SIGN_OPTIONS, firmware, image)

    result = fw_cli.json("firmware", "verify", str(image), "--key", str(public),
                         "--min-security-counter", "9", "--min-version", "2.3.4+5")
    assert result["valid"] is True
    assert (result["version"], result["security_counter"]) == ("2.3.4+5", 9)
    assert result["dependencies"] == [{"image_id": 1, "min_version": "1.0.0+0"}]
    assert result["key"]["type"] == key_type.value
    assert "Image was correctly validated" in run_imgtool("verify", "-k", public, image).stdout

    key = TrustedKey.from_bytes(public.read_bytes())
    with image.open("rb") as fh, pytest.raises(SecurityCounterError):
        verify_image(fh, [key], 10)
    assert "older than the minimum" in fw_cli.refused(
        "firmware", "verify", str(image), "--key", str(public), "--min-version", "2.3.5")

    # Header space already in the binary (no --pad-header), no security counter, no pad.
    blank = tmp_path / "blank.bin"
    blank.write_bytes(bytes(0x100) + firmware.read_bytes())
    plain = tmp_path / "plain.bin"
    run_imgtool("sign", "-k", private, "--version", "0.0.1", "--header-size", "0x100",
                "--slot-size", "0x20000", blank, plain)
    result = verify_image(plain.read_bytes(), [key])
    assert (result.security_counter, str(result.version)) == (None, "0.0.1+0")
    assert result.size == plain.stat().st_size


def test_imgtool_options_iotsec_reads(tmp_path: Path, firmware: Path) -> None:
    """--pad-sig, --public-key-format full, --confirm, --max-align, --load-addr, -s auto."""
    private, public = _imgtool_key(tmp_path, FirmwareKeyType.ECDSA_P256)
    key = TrustedKey.from_bytes(public.read_bytes())
    image = tmp_path / "opts.bin"
    run_imgtool("sign", "-k", private, "--version", "3.1.4", "--security-counter", "auto",
                "--pad-sig", "--public-key-format", "full", "--confirm", "--max-align", "32",
                "--load-addr", "0x20000000", "--header-size", "0x200", "--pad-header",
                "--slot-size", "0x10000", firmware, image)
    result = verify_image(image.read_bytes(), [key])
    assert result.security_counter == (3 << 24) + (1 << 16) + 4
    assert result.header.flags == ImageFlag.RAM_LOAD
    sig = next(t for t in result.unprotected_tlvs if t.name == "ECDSA_SIG")
    assert len(sig.value) == 72  # padded for MCUboot < 1.5
    info = inspect_image(image.read_bytes())
    assert info.trailer is not None
    assert (info.trailer.max_align, info.trailer.image_ok) == (32, 1)


def test_imgtool_big_endian_images(tmp_path: Path, firmware: Path) -> None:
    private, public = _imgtool_key(tmp_path, FirmwareKeyType.ED25519)
    image = tmp_path / "be.bin"
    run_imgtool("sign", "-k", private, "--version", "1.0.0+7", "--security-counter", "3",
                "--endian", "big", "--header-size", "0x200", "--pad-header",
                "--slot-size", "0x20000", firmware, image)
    result = verify_image(image.read_bytes(), [TrustedKey.from_bytes(public.read_bytes())], 3)
    assert (result.header.endian, str(result.version)) == ("big", "1.0.0+7")


def test_features_iotsec_refuses_by_design(fw_cli: Cli, tmp_path: Path,
                                           firmware: Path) -> None:
    private, public = _imgtool_key(tmp_path, FirmwareKeyType.ED25519)
    key = TrustedKey.from_bytes(public.read_bytes())
    base: list[str | Path] = ["--version", "1.0.0", "--header-size", "0x200", "--pad-header",
                              "--slot-size", "0x20000", firmware]

    custom = tmp_path / "custom.bin"
    run_imgtool("sign", "-k", private, "--custom-tlv", "0xa0", "0x1234", *base, custom)
    assert "vendor TLV" in fw_cli.refused("firmware", "verify", str(custom), "--key",
                                          str(public))
    with pytest.raises(UnknownTlvError):
        verify_image(custom.read_bytes(), [key])
    assert verify_image(custom.read_bytes(), [key], allowed_vendor_tlvs=[0xA0]).vendor_tlvs == {
        0xA0: bytes.fromhex("1234")}

    sha512 = tmp_path / "sha512.bin"
    run_imgtool("sign", "-k", private, "--sha", "512", *base, sha512)
    with pytest.raises(UnsupportedImageError, match="SHA-512"):
        verify_image(sha512.read_bytes(), [key])

    unsigned = tmp_path / "unsigned.bin"
    run_imgtool("sign", *base, unsigned)
    with pytest.raises(MissingSignatureError):
        verify_image(unsigned.read_bytes(), [key])
    assert "no trusted public key" in fw_cli.refused("firmware", "verify", str(unsigned))


def test_ed25519_images_are_byte_identical(fw_cli: Cli, tmp_path: Path,
                                           firmware: Path) -> None:
    """The same key and options give the same bytes: the layout is imgtool's exactly."""
    private, _ = _imgtool_key(tmp_path, FirmwareKeyType.ED25519)
    fw_cli.ok("firmware", "import-key", str(private), "-o", "imported.pem")
    assert b"ENCRYPTED" in (tmp_path / "imported.pem").read_bytes()
    for extra in ([], ["--security-counter", "5", "--confirm", "--max-align", "16",
                       "--max-sectors", "64", "--load-addr", "0x1000"],
                  ["--overwrite-only", "--erased-val", "0", "--public-key-format", "full"]):
        options = ["--version", "4.3.2+1", *SIGN_OPTIONS, *extra]
        theirs, ours = tmp_path / "theirs.bin", tmp_path / "ours.bin"
        run_imgtool("sign", "-k", private, *options, firmware, theirs)
        fw_cli.ok("firmware", "sign", str(firmware), str(ours), "--key", "imported.pem",
                  *options)
        assert ours.read_bytes() == theirs.read_bytes(), extra
