"""``iotsec data`` and ``iotsec payload`` end to end, through the real error mapping."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from iotsec.app.setup import init_home
from iotsec.config import Settings
from tests.cli.support import assert_refused
from tests.protect.conftest import Run


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_data_encrypt_decrypt_round_trip(protect_home: Path, run: Run, tmp_path: Path) -> None:
    plain = tmp_path / "report.csv"
    plain.write_bytes(os.urandom(200_000))
    enc = run("data", "encrypt", str(plain), "report.csv.iotsec", "--chunk-size", "16KiB",
              "--json")
    assert enc.code == 0, enc
    info = json.loads(enc.out)
    assert info["chunks"] == 13 and info["plaintext_bytes"] == 200_000
    assert info["kek_id"].startswith("kek-")
    assert stat.S_IMODE((tmp_path / "report.csv.iotsec").stat().st_mode) == 0o600
    # The KEK was created in the home's key directory, private.
    kek_files = list((protect_home / "keys" / "kek").glob("*.kek"))
    assert [p.stem for p in kek_files] == [info["kek_id"]]
    shown = json.loads(run("data", "inspect", "report.csv.iotsec", "--json").out)
    assert shown == {"version": 1, "chunk_size": 16384, "kek_id": info["kek_id"],
                     "wrapped_key_bytes": 61, "header_bytes": shown["header_bytes"],
                     "verified": False}
    dec = run("data", "decrypt", "report.csv.iotsec", "back.csv")
    assert dec.code == 0, dec
    assert "Decrypted 200000 bytes" in dec.err
    assert (tmp_path / "back.csv").read_bytes() == plain.read_bytes()
    assert not leftovers(tmp_path)


def test_data_refusals_leave_nothing_behind(protect_home: Path, run: Run, tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(os.urandom(50_000))
    assert run("data", "encrypt", "in", "in.enc", "--chunk-size", "4KiB").code == 0
    # Never overwrite.
    (tmp_path / "exists").write_bytes(b"keep me")
    err = run("data", "decrypt", "in.enc", "exists")
    assert_refused(err)
    assert "already exists" in err.err and (tmp_path / "exists").read_bytes() == b"keep me"
    assert_refused(run("data", "encrypt", "in", "exists"))
    # A tampered last chunk: the first chunks authenticate, yet no output file appears.
    blob = bytearray((tmp_path / "in.enc").read_bytes())
    blob[-5] ^= 1
    (tmp_path / "bad.enc").write_bytes(bytes(blob))
    refused = run("data", "decrypt", "bad.enc", "out")
    assert_refused(refused)
    assert "chunk 12 does not authenticate" in refused.err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)
    # Truncated at a chunk boundary.
    (tmp_path / "cut.enc").write_bytes(bytes(blob[:-(50_000 % 4096 + 16)]))
    cut = run("data", "decrypt", "cut.enc", "out")
    assert_refused(cut)
    assert "truncated" in cut.err and not (tmp_path / "out").exists()
    # Plaintext never goes to stdout; missing input and directories are refused.
    assert "not to standard output" in run("data", "decrypt", "in.enc", "-").err
    assert "does not exist" in run("data", "encrypt", "nope", "x").err
    assert "is a directory" in run("data", "encrypt", str(tmp_path), "x").err
    assert "not an iotsec encrypted stream" in run("data", "decrypt", "in", "x").err
    assert_refused(run("data", "encrypt", "in", "y", "--chunk-size", "1000"))
    assert not leftovers(tmp_path)


def test_data_through_stdin_and_stdout(protect_home: Path, run: Run, tmp_path: Path) -> None:
    data = os.urandom(70_000)
    enc = run("data", "encrypt", "-", "-", stdin=data)
    assert enc.code == 0, enc.err
    assert "under key-encryption key" in enc.err  # status on stderr, ciphertext on stdout
    blob = enc.out.encode("utf-8", "surrogateescape")
    assert blob.startswith(b"\x89IOTSEC\n") and len(blob) > len(data)
    back = run("data", "decrypt", "-", "piped.out", stdin=blob)
    assert back.code == 0, back.err
    assert (tmp_path / "piped.out").read_bytes() == data


def test_wrong_passphrase_is_refused(protect_home: Path, run: Run,
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    assert run("data", "encrypt", "f", "f.enc").code == 0
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", "a wrong passphrase of some length")
    refused = run("data", "decrypt", "f.enc", "g")
    assert_refused(refused)
    assert "wrong passphrase" in refused.err and "IOTSEC_CA_PASSPHRASE" in refused.err
    assert not (tmp_path / "g").exists()


def _keys(run: Run, kind: str, *names: str) -> None:
    for name in names:
        assert run("payload", "keygen", f"{name}.key", f"{name}.pub", "--type", kind).code == 0


@pytest.mark.parametrize(("kind", "alg"), [("x25519", "A256GCM"),
                                           ("p256", "ChaCha20/Poly1305")])
def test_payload_seal_open_and_replay(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      kind: str, alg: str) -> None:
    monkeypatch.chdir(tmp_path)
    _keys(run, kind, "dev", "app")
    assert stat.S_IMODE((tmp_path / "dev.key").stat().st_mode) == 0o600
    dev = json.loads(run("payload", "pair", "--own-key", "dev.key", "--peer-pub", "app.pub",
                         "--own-id", "dev-1", "--peer-id", "app", "--alg", alg, "--json").out)
    app = json.loads(run("payload", "pair", "--own-key", "app.key", "--peer-pub", "dev.pub",
                         "--own-id", "app", "--peer-id", "dev-1", "--alg", alg,
                         "--salt", dev["salt"], "--json").out)
    assert (dev["send_kid"], dev["receive_kid"]) == (app["receive_kid"], app["send_kid"])
    (tmp_path / "reading.json").write_bytes(b'{"t": 21.5}')
    sealed = run("payload", "seal", "reading.json", "msg.cose", "--sender-key", "dev.key",
                 "--sender-id", "dev-1", "--recipient-pub", "app.pub", "--recipient-id", "app",
                 "--salt", dev["salt"], "--alg", alg, "--seq", "7",
                 "--external-aad", "devices/dev-1/up")
    assert sealed.code == 0, sealed
    shown = json.loads(run("payload", "inspect", "msg.cose", "--json").out)
    assert (shown["kind"], shown["alg"], shown["kid"], shown["seq"]) == \
        ("encrypt0", alg, dev["send_kid"], 7)
    args = ["--sender-pub", "dev.pub", "--sender-id", "dev-1", "--recipient-key", "app.key",
            "--recipient-id", "app", "--salt", dev["salt"], "--external-aad",
            "devices/dev-1/up"]
    state = ["--replay-state", "window.json"]
    opened = run("payload", "open", "msg.cose", "out.json", *args, *state, "--json")
    assert opened.code == 0, opened
    assert json.loads(opened.out)["seq"] == 7
    assert (tmp_path / "out.json").read_bytes() == b'{"t": 21.5}'
    assert json.loads((tmp_path / "window.json").read_text())["top"] == 7
    replayed = run("payload", "open", "msg.cose", "again.json", *args, *state)
    assert_refused(replayed)
    assert "already accepted" in replayed.err and not (tmp_path / "again.json").exists()
    wrong_aad = [a if a != "devices/dev-1/up" else "devices/dev-2/up" for a in args]
    assert "does not authenticate" in run("payload", "open", "msg.cose", "x", *wrong_aad).err
    _keys(run, kind, "eve")
    other = [a if a != "app.key" else "eve.key" for a in args]
    assert "no key with kid" in run("payload", "open", "msg.cose", "x", *other).err


def test_payload_sign1_and_usage_errors(run: Run, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _keys(run, "ed25519", "signer")
    _keys(run, "x25519", "dh")
    (tmp_path / "t").write_bytes(b"status=ok")
    assert run("payload", "seal", "t", "t.cose", "--sender-key", "signer.key", "--sender-id",
               "dev-1", "--alg", "EdDSA").code == 0
    opened = run("payload", "open", "t.cose", "-", "--sender-pub", "signer.pub",
                 "--sender-id", "dev-1")
    assert opened.code == 0 and opened.out == "status=ok"
    assert "seq" in run("payload", "inspect", "t.cose").out
    # Key of the wrong type for the operation.
    assert "cannot sign" in run("payload", "seal", "t", "u", "--sender-key", "dh.key",
                                "--sender-id", "dev-1", "--alg", "EdDSA").err
    assert "ES256" in run("payload", "seal", "t", "u", "--sender-key", "signer.key",
                          "--sender-id", "dev-1", "--alg", "ES256").err
    assert "Ed25519 key cannot be used for key agreement" in run(
        "payload", "seal", "t", "u", "--sender-key", "signer.key", "--sender-id", "dev-1",
        "--recipient-pub", "dh.pub", "--recipient-id", "app", "--salt", "00" * 16).err
    assert "give the recipient" in run("payload", "seal", "t", "u", "--sender-key", "dh.key",
                                       "--sender-id", "dev-1").err
    assert "unknown algorithm" in run("payload", "seal", "t", "u", "--sender-key", "dh.key",
                                      "--sender-id", "d", "--alg", "A128GCM").err
    assert "not hexadecimal" in run("payload", "pair", "--own-key", "dh.key", "--peer-pub",
                                    "dh.pub", "--own-id", "a", "--peer-id", "b",
                                    "--salt", "zz").err
    assert "not a COSE message" in run("payload", "inspect", "t").err
    assert "not an unencrypted PKCS#8" in run("payload", "seal", "t", "u", "--sender-key",
                                              "t", "--sender-id", "d", "--alg", "EdDSA").err
    # Usage errors exit 2.
    assert run("payload", "seal", "t").code == 2


def _kdf_of_kek_files(home: Path) -> list[str]:
    return [json.loads(p.read_bytes())["kdf"] for p in (home / "keys" / "kek").glob("*.kek")]


def test_data_kek_derivation_follows_the_home_secret(protect_home: Path, run: Run,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A home made by ``iotsec init --store-passphrase`` holds a generated secret: its KEK
    file is sealed with HKDF (ADR 0030). A passphrase from the environment may be a
    person's: a home using one gets a scrypt KEK file. Both encrypt and decrypt."""
    (tmp_path / "in").write_bytes(os.urandom(70_000))
    assert run("data", "encrypt", "in", "a.enc").code == 0
    assert _kdf_of_kek_files(protect_home) == ["hkdf-sha256"]
    assert run("data", "decrypt", "a.enc", "a.out").code == 0
    assert (tmp_path / "a.out").read_bytes() == (tmp_path / "in").read_bytes()

    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("IOTSEC_HOME", str(other / "home"))
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", "a passphrase a person chose, long enough")
    init_home(Settings(home=other / "home"))
    assert not (other / "home" / "ca-passphrase").exists()
    (other / "in").write_bytes(os.urandom(70_000))
    encrypted = run("data", "encrypt", "in", "b.enc")
    assert encrypted.code == 0, encrypted
    assert _kdf_of_kek_files(other / "home") == ["scrypt"]
    assert run("data", "decrypt", "b.enc", "b.out").code == 0
    assert (other / "b.out").read_bytes() == (other / "in").read_bytes()


def test_data_report_line_escapes_control_characters(protect_home: Path, run: Run,
                                                      tmp_path: Path) -> None:
    """The one line the data commands print (plain stderr, no Rich) shows a file name's
    control characters escaped: a name cannot drive the terminal."""
    (tmp_path / "in").write_bytes(b"data")
    name = "out\x1b[2J.enc"
    done = run("data", "encrypt", "in", name)
    assert done.code == 0, done
    assert "\x1b" not in done.err and "out\\x1b[2J.enc" in done.err
    assert (tmp_path / name).exists()
