"""The commands: ``iotsec backup create|restore``, ``iotsec cert import``, ``iotsec migrate``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from tests.backup.conftest import PASSPHRASE
from tests.cli.support import Cli, use_home
from tests.helpers import make_csr


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    use_home(monkeypatch, tmp_path / "home", initialise=False)
    monkeypatch.setenv("IOTSEC_BACKUP_PASSPHRASE", PASSPHRASE.decode())
    return Cli(capsys)


def _crl_number(path: Path) -> int:
    crl = x509.load_der_x509_crl(path.read_bytes())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_restore_never_reuses_a_published_crl_number(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("init", "--store-passphrase")
    (tmp_path / "d.csr").write_bytes(make_csr())
    for device in ("dev-1", "dev-2"):
        cli.ok("device", "add", device)
    first = cli.json("cert", "issue", "dev-1", "--csr", str(tmp_path / "d.csr"))
    cli.ok("crl", "-o", str(tmp_path / "1.crl"))
    made = cli.json("backup", "create", str(tmp_path / "home.bak"))
    assert made["tables"]["certificates"] == 1 and "keystore.json" in made["files"]
    # After the backup: a certificate the backup never sees, a revocation, CRL number 2.
    (tmp_path / "d2.csr").write_bytes(make_csr())  # a key of its own: one key, one device
    late = cli.json("cert", "issue", "dev-2", "--csr", str(tmp_path / "d2.csr"))
    (tmp_path / "late.pem").write_text(late["pem"])
    cli.ok("cert", "revoke", first["serial"])
    cli.ok("crl", "-o", str(tmp_path / "2.crl"))
    assert (_crl_number(tmp_path / "1.crl"), _crl_number(tmp_path / "2.crl")) == (1, 2)

    monkeypatch.setenv("IOTSEC_HOME", str(tmp_path / "restored"))
    restored = cli.json("backup", "restore", str(tmp_path / "home.bak"),
                        "--published-crl", str(tmp_path / "2.crl"))
    assert restored["revocations_applied"] == [first["serial"]]
    cli.ok("crl", "-o", str(tmp_path / "3.crl"))
    assert _crl_number(tmp_path / "3.crl") == 3  # a plain copy of the home would say 2
    imported = cli.json("cert", "import", str(tmp_path / "late.pem"))
    assert imported["imported"] == [{"serial": late["serial"], "device_id": "dev-2"}]
    cli.ok("cert", "revoke", late["serial"])
    cli.ok("crl", "-o", str(tmp_path / "4.crl"))
    revoked = {e.serial_number for e in x509.load_der_x509_crl(
        (tmp_path / "4.crl").read_bytes())}
    assert {int(first["serial"], 16), int(late["serial"], 16)} <= revoked


def test_restore_says_what_it_did(cli: Cli, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("init", "--store-passphrase")
    cli.ok("backup", "create", str(tmp_path / "home.bak"))
    monkeypatch.setenv("IOTSEC_HOME", str(tmp_path / "restored"))
    result = cli.ok("backup", "restore", str(tmp_path / "home.bak"))
    assert "jump of 1000000" in result.out
    assert "iotsec cert import" in result.err
    assert "already exists" in cli.refused("backup", "create", str(tmp_path / "home.bak"))
    assert "is not empty" in cli.refused("backup", "restore", str(tmp_path / "home.bak"))


def test_the_passphrase_never_comes_from_the_command_line(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("init", "--store-passphrase")
    monkeypatch.delenv("IOTSEC_BACKUP_PASSPHRASE")
    assert "IOTSEC_BACKUP_PASSPHRASE" in cli.refused("backup", "create",
                                                     str(tmp_path / "b.bak"))
    assert cli("backup", "create", str(tmp_path / "b.bak"), "--passphrase", "x").code == 2
    assert not (tmp_path / "b.bak").exists()


def test_migrate_command(cli: Cli, pg_schema: Callable[[], str], tmp_path: Path) -> None:
    cli.ok("init", "--store-passphrase")
    cli.ok("device", "add", "dev-1")
    cli.ok("crl", "-o", str(tmp_path / "before.crl"))
    url = pg_schema()
    moved = cli.json("migrate", "--to", url)
    assert moved["tables"]["devices"] == 1
    cli.ok("crl", "-o", str(tmp_path / "after.crl"))
    assert (tmp_path / "before.crl").read_bytes() == (tmp_path / "after.crl").read_bytes()
    assert [d["id"] for d in cli.json("device", "list")] == ["dev-1"]
    assert "already" in cli.refused("migrate", "--to", pg_schema())
