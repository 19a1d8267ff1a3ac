"""Refused commands exit 1 with one 'iotsec: error:' line and leave the store as it was;
usage errors exit 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import Cli
from tests.helpers import make_csr, make_key

GOOD_PASSPHRASE = "correct horse battery staple 1"
OTHER_PASSPHRASE = "incorrect horse battery staple 2"


@pytest.fixture
def fleet(cli: Cli, ready: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """One device with a valid and a revoked certificate, and CSR files to try."""
    files = {
        "good": make_csr(),
        "garbage": b"this is not a certificate request\n",
        "big": b"A" * (64 * 1024 + 1),
        "rsa1024": make_csr(make_key("rsa1024")),
        "der": make_csr(der=True),
    }
    paths = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.csr"
        path.write_bytes(data)
        paths[name] = str(path)
    cli.ok("device", "add", "dev-1")
    valid = cli.json("cert", "issue", "dev-1", "--csr", paths["good"])
    revoked = cli.json("cert", "issue", "dev-1", "--csr", paths["der"])
    cli.ok("cert", "revoke", revoked["serial"])
    return {**paths, "serial": valid["serial"], "revoked": revoked["serial"]}


def test_refusals_leave_the_store_unchanged(cli: Cli, fleet: dict[str, str],
                                            tmp_path: Path) -> None:
    before = cli.store()
    unknown = "0123456789ABCDEF0123"
    cases: list[tuple[tuple[str, ...], str]] = [
        (("cert", "issue", "dev-1", "--csr", fleet["garbage"]), "not a valid PEM or DER"),
        (("cert", "issue", "dev-1", "--csr", fleet["big"]), "limit is 65536"),
        (("cert", "issue", "dev-1", "--csr", fleet["rsa1024"]), "1024 bits"),
        (("cert", "issue", "dev-1", "--csr", str(tmp_path / "nope.csr")), "does not exist"),
        (("cert", "issue", "dev-1", "--csr", str(tmp_path)), "is a directory"),
        (("cert", "issue", "nobody", "--csr", fleet["good"]), "not registered"),
        (("cert", "issue", "a/b", "--csr", fleet["good"]), "not allowed"),
        (("cert", "issue", "dev-1", "--csr", fleet["good"], "--days", "0"), "out of range"),
        (("cert", "issue", "dev-1", "--keygen", "-o", str(tmp_path / "k"), "--key-type",
          "dsa"), "unknown key type"),
        (("device", "show", "nobody"), "not registered"),
        (("device", "disable", "nobody"), "not registered"),
        (("device", "add", "a/b"), "not allowed"),
        (("device", "add", "a b"), "not allowed"),
        (("device", "add", "x" * 300), "300 characters"),
        (("device", "add", "dev-1"), "already registered"),
        (("device", "add", "dev-2", "--attr", "novalue"), "key=value"),
        (("device", "add", "dev-2", "--group", "a/b"), "group name"),
        (("device", "list", "--state", "lost"), "unknown state"),
        (("cert", "revoke", unknown), "no certificate"),
        (("cert", "revoke", "xyz"), "not a certificate serial"),
        (("cert", "revoke", fleet["serial"], "--reason", "certificateHold"),
         "unknown revocation reason"),
        (("cert", "revoke", "--device", "nobody"), "not registered"),
        (("cert", "renew", fleet["revoked"], "--csr", fleet["good"]), "never be renewed"),
        (("cert", "renew", unknown, "--csr", fleet["good"]), "no certificate"),
        (("cert", "renew", fleet["serial"], "--csr", fleet["garbage"]), "not a valid PEM"),
        (("cert", "renew", fleet["serial"], "--csr", fleet["good"], "--grace", "91d"),
         "grace period"),
        (("cert", "show", unknown), "no certificate"),
        (("cert", "list", "--expiring-within", "soon"), "not a duration"),
        (("crl", "--ca", "intermediate", "-o", str(tmp_path / "x.der")), "unknown CA"),
    ]
    failures = []
    for args, expected in cases:
        try:
            message = cli.refused(*args)
            assert expected in message, message
            assert cli.store() == before, "the store changed"
        except AssertionError as exc:
            failures.append(f"{' '.join(args)[:80]}: {exc}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "k").exists()
    assert not (tmp_path / "x.der").exists()


def test_revoking_again_is_done_already(cli: Cli, fleet: dict[str, str]) -> None:
    """A retried revocation succeeds (exit 0) and changes nothing, whatever the spelling."""
    before = cli.store()
    for args in (("cert", "revoke", fleet["revoked"]),
                 ("cert", "revoke", fleet["revoked"].lower(), "--reason", "keyCompromise")):
        assert "already revoked" in cli.ok(*args).out
        assert cli.store() == before
    again = cli.json("cert", "revoke", fleet["revoked"])
    assert again["revoked"] == [] and again["already_revoked"] == [fleet["revoked"]]


def test_usage_errors_exit_2(cli: Cli, fleet: dict[str, str], tmp_path: Path) -> None:
    before = cli.store()
    for args in (
        ("device", "list", "--bogus"),
        ("frobnicate",),
        ("cert", "issue", "dev-1"),
        ("cert", "issue", "dev-1", "--csr", fleet["good"], "--keygen", "-o", str(tmp_path)),
        ("cert", "issue", "dev-1", "--keygen"),
        ("cert", "revoke"),
        ("cert", "revoke", fleet["serial"], "--device", "dev-1"),
        ("cert", "renew", fleet["serial"]),
        ("device", "list", "--limit", "many"),
        ("serve", "--port", "0"),
    ):
        result = cli(*args)
        assert result.code == 2, (args, result)
        assert "Traceback" not in result.out + result.err
        assert result.err.strip(), args
    assert cli.store() == before


def test_wrong_ca_passphrase(cli: Cli, cli_home: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", GOOD_PASSPHRASE)
    cli.ok("init")
    assert not (cli_home / "ca-passphrase").exists()
    cli.ok("device", "add", "dev-1")
    csr = tmp_path / "d.csr"
    csr.write_bytes(make_csr())
    before = cli.store()

    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", OTHER_PASSPHRASE)
    for args in (("cert", "issue", "dev-1", "--csr", str(csr)),
                 ("crl", "-o", str(tmp_path / "crl.der"))):
        message = cli.refused(*args)
        assert "check IOTSEC_CA_PASSPHRASE" in message
        assert GOOD_PASSPHRASE not in message
        assert OTHER_PASSPHRASE not in message
    assert cli.store() == before
    assert not (tmp_path / "crl.der").exists()

    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", GOOD_PASSPHRASE)
    cli.ok("cert", "issue", "dev-1", "--csr", str(csr))


def test_a_short_ca_passphrase_is_refused(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", "short")
    assert "too short" in cli.refused("init")


def test_crl_refuses_to_write_der_to_a_terminal(cli: Cli, ready: object,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    message = cli.refused("crl")
    assert "terminal" in message
    assert "--pem" in message
    # PEM is text: fine on a terminal.
    assert cli.ok("crl", "--pem").out.startswith("-----BEGIN X509 CRL-----")


def test_debug_does_not_change_refusals(cli: Cli, ready: object,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_DEBUG", "1")
    assert "not registered" in cli.refused("device", "show", "nobody")


def test_a_superscript_reason_is_refused_cleanly(cli: Cli, fleet: dict[str, str]) -> None:
    assert "unknown revocation reason" in cli.refused("cert", "revoke", fleet["serial"],
                                                      "--reason", "\u00b2")


def test_unspecified_reason_is_shown(cli: Cli, fleet: dict[str, str]) -> None:
    assert cli.json("cert", "show", fleet["revoked"])["revocation_reason"] == "unspecified"
