"""``iotsec init`` and what happens on a home that was never initialised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iotsec.app.access.api_tokens import authenticate
from iotsec.app.runtime import open_runtime
from iotsec.config import Settings
from tests.cli.support import TOKEN, Cli


def _token_works(home: Path, token: str) -> bool:
    rt = open_runtime(Settings(home=home))
    try:
        return authenticate(rt, token).scope == "admin"
    finally:
        rt.close()


def test_init_prints_the_admin_token_once(cli: Cli, cli_home: Path) -> None:
    first = cli.ok("init", "--store-passphrase")
    tokens = TOKEN.findall(first.out + first.err)
    assert len(tokens) == 1
    assert "shown once" in first.err
    assert _token_works(cli_home, tokens[0])
    assert (cli_home / "iotsec.db").exists()

    again = cli.refused("init", "--store-passphrase")
    assert "already initialised" in again
    assert not TOKEN.search(again)

    # A home made with the embedded default needs no new choice to be reused.
    quiet = cli.ok("init", "--exist-ok")
    assert "already initialised" in quiet.out
    assert not TOKEN.search(quiet.out + quiet.err)
    # The token printed first still works; no new one was made.
    assert _token_works(cli_home, tokens[0])


def test_init_json(cli: Cli, cli_home: Path) -> None:
    data: dict[str, Any] = cli.json("init", "--store-passphrase")
    assert data["created"] is True
    assert TOKEN.fullmatch(data["admin_token"])
    assert Path(data["home"]) == cli_home.resolve()
    assert "CN=" in data["root"] and "CN=" in data["issuing"]
    assert data["root"] != data["issuing"]
    assert _token_works(cli_home, data["admin_token"])

    again = cli.json("init", "--exist-ok")
    assert again["created"] is False
    assert again["admin_token"] is None
    assert (again["root"], again["issuing"]) == (data["root"], data["issuing"])


def test_init_with_p384(cli: Cli) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    cli.ok("init", "--store-passphrase", "--key-type", "ecdsa-p384")
    chain = x509.load_pem_x509_certificates(cli.ok("ca", "chain").out.encode())
    assert len(chain) == 2
    for cert in chain:
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp384r1"


def test_init_with_an_unknown_key_type_creates_nothing(cli: Cli, cli_home: Path) -> None:
    message = cli.refused("init", "--store-passphrase", "--key-type", "dsa-1024")
    assert "dsa-1024" in message
    assert not cli_home.exists()


def test_commands_on_an_uninitialised_home(cli: Cli, cli_home: Path, tmp_path: Path) -> None:
    csr = tmp_path / "x.csr"
    csr.write_bytes(b"irrelevant")
    for args in (("device", "list"), ("device", "add", "d1"), ("cert", "list"),
                 ("ca", "chain"), ("crl", "-o", str(tmp_path / "crl.der")),
                 ("cert", "revoke", "0A")):
        message = cli.refused(*args)
        assert "iotsec init" in message, args
    assert not cli_home.exists()
    assert not (tmp_path / "crl.der").exists()


def test_init_stores_no_passphrase_unless_asked(cli: Cli, cli_home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTSEC_CA_PASSPHRASE", raising=False)
    # Neither IOTSEC_CA_PASSPHRASE nor --store-passphrase: refused, nothing written.
    message = cli.refused("init")
    assert "IOTSEC_CA_PASSPHRASE" in message and "--store-passphrase" in message
    assert not cli_home.exists()
    # The variable: the passphrase is stored nowhere, and init says so.
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", "a passphrase kept in a vault")
    assert "--store-passphrase and IOTSEC_CA_PASSPHRASE" in cli.refused(
        "init", "--store-passphrase")
    assert not cli_home.exists()
    said = cli.ok("init").out
    assert "from IOTSEC_CA_PASSPHRASE, not stored in the home" in said
    assert not (cli_home / "ca-passphrase").exists()
    assert not any(p.name == "ca-passphrase" for p in cli_home.rglob("*"))
    # The embedded default, asked for: generated, stored 0600 in the home, and said.
    other = tmp_path / "other-home"
    monkeypatch.setenv("IOTSEC_HOME", str(other))
    monkeypatch.delenv("IOTSEC_CA_PASSPHRASE")
    data = cli.json("init", "--store-passphrase")
    assert data["ca_passphrase"] == "home-file"
    stored = other / "ca-passphrase"
    assert data["ca_passphrase_file"] == str(stored.resolve())
    assert stored.stat().st_mode & 0o777 == 0o600 and len(stored.read_bytes().strip()) >= 32
    assert cli.json("init", "--exist-ok")["ca_passphrase"] == "home-file"
