"""``iotsec firmware`` mounted on a root app: keygen, import-key, public-key, sign, verify,
inspect, and the refusals (exit 1, one line) and usage errors (exit 2)."""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iotsec.app.ota import firmware as service
from iotsec.firmware import TrustedKey
from tests.cli.support import Cli
from tests.firmware.support import PASSPHRASE


@pytest.fixture
def fw(tmp_path: Path) -> Path:
    path = tmp_path / "fw.bin"
    path.write_bytes(b"\x01\x02\x03\x04" * 5000)
    return path


@pytest.fixture
def keypair(fw_cli: Cli) -> tuple[str, str]:
    fw_cli.ok("firmware", "keygen", "--type", "ed25519", "-o", "key.pem",
              "--public-out", "pub.pem")
    return "key.pem", "pub.pem"


def _sign(cli: Cli, fw: Path, out: str, key: str, *extra: str) -> None:
    cli.ok("firmware", "sign", str(fw), out, "--key", key, "--version", "1.2.3+4",
           "--pad-header", *extra)


def test_keygen_writes_an_encrypted_key_and_its_public_key(fw_cli: Cli,
                                                           tmp_path: Path) -> None:
    data = fw_cli.json("firmware", "keygen", "--type", "rsa-2048", "-o", "k.pem",
                       "--public-out", "k.pub")
    key_file = tmp_path / "k.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    private = serialization.load_pem_private_key(pem, password=PASSPHRASE.encode())
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    public = TrustedKey.from_bytes((tmp_path / "k.pub").read_bytes())
    assert public.key_hash.hex() == data["key_hash"]
    assert data["type"] == "rsa-2048" and data["passphrase"] is None
    assert PASSPHRASE not in fw_cli("firmware", "keygen", "-o", "x.pem").out


def test_keygen_never_overwrites(fw_cli: Cli, keypair: tuple[str, str],
                                 tmp_path: Path) -> None:
    before = (tmp_path / "key.pem").read_bytes()
    assert "already exists" in fw_cli.refused("firmware", "keygen", "-o", "key.pem")
    assert "already exists" in fw_cli.refused("firmware", "keygen", "-o", "new.pem",
                                              "--public-out", "pub.pem")
    assert not (tmp_path / "new.pem").exists()
    assert (tmp_path / "key.pem").read_bytes() == before


def test_keygen_passphrase_rules(fw_cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    monkeypatch.delenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE")
    assert "no passphrase" in fw_cli.refused("firmware", "keygen", "-o", "a.pem")
    data = fw_cli.json("firmware", "keygen", "-o", "gen.pem", "--generate-passphrase")
    generated = data["passphrase"]
    assert len(generated) >= 24
    serialization.load_pem_private_key((tmp_path / "gen.pem").read_bytes(),
                                       password=generated.encode())
    shown = fw_cli.ok("firmware", "keygen", "-o", "gen2.pem", "--generate-passphrase")
    assert "shown once" in shown.err
    monkeypatch.setenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE", "short")
    assert "too short" in fw_cli.refused("firmware", "keygen", "-o", "b.pem")
    assert fw_cli("firmware", "keygen", "-o", "c.pem", "--generate-passphrase").code == 2
    assert not (tmp_path / "a.pem").exists() and not (tmp_path / "b.pem").exists()
    assert fw_cli("firmware", "keygen", "-o", "d.pem", "--type", "dsa").code == 1


def test_sign_verify_inspect(fw_cli: Cli, keypair: tuple[str, str], fw: Path,
                             tmp_path: Path) -> None:
    key, pub = keypair
    _sign(fw_cli, fw, "img.bin", key, "--security-counter", "3", "-d", "(1, 0.9)")
    out = fw_cli.ok("firmware", "verify", "img.bin", "--key", pub).out
    assert "version 1.2.3+4" in out and "security counter 3" in out and "ed25519" in out
    data = fw_cli.json("firmware", "verify", "img.bin", "--key", pub)
    assert data["dependencies"] == [{"image_id": 1, "min_version": "0.9.0+0"}]
    assert "below the minimum 4" in fw_cli.refused(
        "firmware", "verify", "img.bin", "--key", pub, "--min-security-counter", "4")
    shown = fw_cli.ok("firmware", "inspect", "img.bin").out
    for word in ("not verified", "1.2.3+4", "SEC_CNT", "DEPENDENCY", "SHA256", "KEYHASH",
                 "ED25519"):
        assert word in shown, word
    info = fw_cli.json("firmware", "inspect", "img.bin")
    assert info["header"]["hdr_size"] == 0x200  # the default header size
    assert [t["name"] for t in info["tlvs"]] == ["SHA256", "KEYHASH", "ED25519"]
    assert info["protected_tlvs"][0]["value"] == "3"
    assert info["trailer"] is None and info["padding"] == 0


def test_verify_refuses_without_a_key_and_with_a_private_key(fw_cli: Cli,
                                                             keypair: tuple[str, str],
                                                             fw: Path) -> None:
    key, pub = keypair
    _sign(fw_cli, fw, "img.bin", key)
    line = fw_cli.refused("firmware", "verify", "img.bin")
    assert "never accepted on its hash alone" in line and "--key" in line
    assert "private key" in fw_cli.refused("firmware", "verify", "img.bin", "--key", key)
    assert "does not exist" in fw_cli.refused("firmware", "verify", "nope.bin", "--key", pub)
    assert "does not exist" in fw_cli.refused("firmware", "verify", "img.bin", "--key", "no")


def test_verify_reports_the_failure_in_one_line(fw_cli: Cli, keypair: tuple[str, str],
                                                fw: Path, tmp_path: Path) -> None:
    key, pub = keypair
    _sign(fw_cli, fw, "img.bin", key)
    image = tmp_path / "img.bin"
    data = bytearray(image.read_bytes())
    data[0x201] ^= 0xFF
    image.write_bytes(bytes(data))
    assert "hash does not match" in fw_cli.refused("firmware", "verify", "img.bin",
                                                   "--key", pub)
    image.write_bytes(b"not an image at all, just some bytes")
    assert "bad image magic" in fw_cli.refused("firmware", "inspect", "img.bin")


def test_verify_from_standard_input(keypair: tuple[str, str], fw_cli: Cli, fw: Path,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, pub = keypair
    _sign(fw_cli, fw, "img.bin", key)
    raw = (tmp_path / "img.bin").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    keys = service.load_trusted_keys([tmp_path / pub])
    assert str(service.verify_path("-", keys).version) == "1.2.3+4"


def test_sign_key_custody(fw_cli: Cli, keypair: tuple[str, str], fw: Path,
                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key, _ = keypair
    monkeypatch.setenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE", "a wrong passphrase, long enough")
    line = fw_cli.refused("firmware", "sign", str(fw), "o.bin", "--key", key, "--version", "1",
                          "--pad-header")
    assert "cannot decrypt" in line and "long enough" not in line
    monkeypatch.delenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE")
    assert "no passphrase" in fw_cli.refused("firmware", "sign", str(fw), "o.bin", "--key",
                                             key, "--version", "1", "--pad-header")
    # An unencrypted key (as imgtool writes it) is refused until imported.
    plain = tmp_path / "plain.pem"
    plain.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert "import-key" in fw_cli.refused("firmware", "sign", str(fw), "o.bin", "--key",
                                          str(plain), "--version", "1", "--pad-header")
    monkeypatch.setenv("IOTSEC_FIRMWARE_KEY_PASSPHRASE", PASSPHRASE)
    fw_cli.ok("firmware", "import-key", str(plain), "-o", "imported.pem")
    _sign(fw_cli, fw, "o.bin", "imported.pem")
    fw_cli.ok("firmware", "public-key", "imported.pem", "-o", "imported.pub")
    fw_cli.ok("firmware", "verify", "o.bin", "--key", "imported.pub")
    # Keys MCUboot cannot verify are refused with a reason.
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    assert "secp384r1" in fw_cli.refused("firmware", "sign", str(fw), "o2.bin", "--key",
                                         str(p384), "--version", "1", "--pad-header")


def test_public_key_export(fw_cli: Cli, keypair: tuple[str, str], tmp_path: Path) -> None:
    key, pub = keypair
    pem = fw_cli.ok("firmware", "public-key", key).out
    assert pem == (tmp_path / pub).read_text()
    fw_cli.ok("firmware", "public-key", key, "-o", "again.pem")
    assert (tmp_path / "again.pem").read_text() == pem
    data = fw_cli.json("firmware", "public-key", pub)
    assert data["key_hash"] == TrustedKey.from_bytes(pem.encode()).key_hash.hex()


def test_sign_usage_errors_and_layout_refusals(fw_cli: Cli, keypair: tuple[str, str],
                                               fw: Path, tmp_path: Path) -> None:
    key, _ = keypair
    base = ["firmware", "sign", str(fw), "out.bin", "--key", key, "--pad-header"]
    assert fw_cli(*base, "--version", "1.2.3.4").code == 2
    assert fw_cli(*base, "--version", "1", "--align", "3").code == 2
    assert fw_cli(*base, "--version", "1", "--pad").code == 2
    assert fw_cli(*base, "--version", "1", "-d", "(1,").code == 2
    assert fw_cli(*base, "--version", "1", "--header-size", "zz").code == 2
    assert "exceeds the slot size" in fw_cli.refused(*base, "--version", "1",
                                                     "--slot-size", "0x1000")
    assert "zero bytes" in fw_cli.refused("firmware", "sign", str(fw), "out.bin", "--key",
                                          key, "--version", "1")
    assert "overwrite the input" in fw_cli.refused("firmware", "sign", str(fw), str(fw),
                                                   "--key", key, "--version", "1",
                                                   "--pad-header")
    assert "does not exist" in fw_cli.refused("firmware", "sign", "missing.bin", "out.bin",
                                              "--key", key, "--version", "1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw.bin", "key.pem", "pub.pem"]


def test_sign_overwrites_its_output_atomically(fw_cli: Cli, keypair: tuple[str, str],
                                               fw: Path, tmp_path: Path) -> None:
    key, pub = keypair
    (tmp_path / "img.bin").write_bytes(b"old")
    _sign(fw_cli, fw, "img.bin", key, "--security-counter", "auto")
    data = fw_cli.json("firmware", "verify", "img.bin", "--key", pub)
    assert data["security_counter"] == 0x01020003
