"""``cert issue --keygen`` killed at any moment never leaves a valid certificate whose
private key was not saved, and running it again finishes the job with one certificate.

The process really dies (SIGKILL, sent by itself at the exact point, so there is no race
to win): the store must come back consistent from a crash, not from an exception handler.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

import iotsec.filesystem
from iotsec.app.pki.cert_records import CertificateRecord, list_certificates
from iotsec.app.runtime import open_runtime
from iotsec.cli.main import main
from iotsec.config import Settings
from tests.cli.support import use_home
from tests.faults.support import RUN_CLI, command_env, run_cli

PASSPHRASE = "a passphrase for the test"

#: Installs a fault into the filesystem adapter, then runs the CLI: when the file named
#: ``argv[1]`` is about to be written ("before") or was just written ("after"), the
#: process sends itself SIGKILL.
KILL_AT = """
import os, signal, sys
import iotsec.filesystem as fs
name, when = sys.argv.pop(1), sys.argv.pop(1)
real = fs.atomic_write
def atomic_write(path, data, **kw):
    if path.name == name and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data, **kw)
    if path.name == name and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
fs.atomic_write = atomic_write
""" + RUN_CLI


def _valid_certificates(home: Path) -> list[CertificateRecord]:
    rt = open_runtime(Settings(home=home))
    try:
        now = rt.now()
        return [c for c in list_certificates(rt, device_id="dev-1")
                if c.status(now) == "valid"]
    finally:
        rt.close()


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _assert_no_orphan(home: Path, out: Path) -> None:
    """Every valid certificate of dev-1 has its private key saved in ``out``."""
    valid = _valid_certificates(home)
    if not valid:
        return
    key_file = out / "dev-1.key"
    assert key_file.exists(), f"certificate {valid[0].serial} is valid but its key was lost"
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    for record in valid:
        cert = x509.load_der_x509_certificate(record.der)
        assert _spki(cert.public_key()) == _spki(key.public_key()), record.serial


def _assert_complete(home: Path, out: Path) -> None:
    """One valid certificate, and the four files belong to it."""
    valid = _valid_certificates(home)
    assert len(valid) == 1, [c.serial for c in valid]
    cert = x509.load_pem_x509_certificate((out / "dev-1.crt").read_bytes())
    assert cert.public_bytes(serialization.Encoding.DER) == valid[0].der
    key = serialization.load_pem_private_key((out / "dev-1.key").read_bytes(), None)
    assert _spki(key.public_key()) == _spki(cert.public_key())
    assert (out / "dev-1.key").stat().st_mode & 0o077 == 0
    p12_key, p12_cert, _ = pkcs12.load_key_and_certificates(
        (out / "dev-1.p12").read_bytes(), PASSPHRASE.encode())
    assert p12_cert == cert and p12_key is not None
    assert _spki(p12_key.public_key()) == _spki(cert.public_key())
    assert len(x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())) == 2


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = use_home(monkeypatch, tmp_path / "home")
    assert main(["device", "add", "dev-1"]) == 0
    return home


@pytest.mark.parametrize(("name", "when"), [
    ("dev-1.key", "before"),  # the reported window: after the commit in the old order
    ("dev-1.key", "after"),
    ("dev-1.p12", "before"),
    ("dev-1.crt", "before"),
])
def test_a_kill_leaves_no_orphan_and_a_rerun_finishes(home: Path, tmp_path: Path,
                                                      name: str, when: str) -> None:
    out = tmp_path / "out"
    env = command_env(home, IOTSEC_P12_PASSPHRASE=PASSPHRASE)
    args = ("cert", "issue", "dev-1", "--keygen", "-o", str(out))
    killed = run_cli(name, when, *args, env=env, code=KILL_AT)
    assert killed.returncode == -signal.SIGKILL, killed
    _assert_no_orphan(home, out)

    rerun = run_cli(*args, env=env)
    assert rerun.returncode == 0, rerun
    _assert_complete(home, out)
    # Once complete, a further run is refused and issues nothing.
    again = run_cli(*args, env=env)
    assert again.returncode == 1 and "already exists" in again.stderr, again
    assert len(_valid_certificates(home)) == 1


class Crash(BaseException):
    """Stands for the process dying: no handler in iotsec catches it."""


def test_a_crash_writing_the_key_issues_nothing(home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = iotsec.filesystem.atomic_write

    def atomic_write(path: Path, data: bytes, **kw: int) -> None:
        if path.suffix == ".key":
            raise Crash
        real(path, data, **kw)

    monkeypatch.setattr(iotsec.filesystem, "atomic_write", atomic_write)
    monkeypatch.setenv("IOTSEC_P12_PASSPHRASE", PASSPHRASE)
    out = tmp_path / "out"
    with pytest.raises(Crash):
        main(["cert", "issue", "dev-1", "--keygen", "-o", str(out)])
    assert _valid_certificates(home) == []
    monkeypatch.setattr(iotsec.filesystem, "atomic_write", real)
    assert main(["cert", "issue", "dev-1", "--keygen", "-o", str(out)]) == 0
    _assert_complete(home, out)


def test_a_key_file_that_is_not_a_leftover_is_refused(home: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "dev-1.key").write_text("not a key\n")
    capsys.readouterr()
    assert main(["cert", "issue", "dev-1", "--keygen", "-o", str(out)]) == 1
    assert "not an ecdsa-p256 private key left by an interrupted" in capsys.readouterr().err
    assert _valid_certificates(home) == []
