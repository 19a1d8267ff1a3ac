"""``iotsec init`` and what happens on a home that was never initialised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    first = cli.ok("init")
    tokens = TOKEN.findall(first.out + first.err)
    assert len(tokens) == 1
    assert "shown once" in first.err
    assert _token_works(cli_home, tokens[0])
    assert (cli_home / "iotsec.db").exists()

    again = cli.refused("init")
    assert "already initialised" in again
    assert not TOKEN.search(again)

    quiet = cli.ok("init", "--exist-ok")
    assert "already initialised" in quiet.out
    assert not TOKEN.search(quiet.out + quiet.err)
    # The token printed first still works; no new one was made.
    assert _token_works(cli_home, tokens[0])


def test_init_json(cli: Cli, cli_home: Path) -> None:
    data: dict[str, Any] = cli.json("init")
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

    cli.ok("init", "--key-type", "ecdsa-p384")
    chain = x509.load_pem_x509_certificates(cli.ok("ca", "chain").out.encode())
    assert len(chain) == 2
    for cert in chain:
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp384r1"


def test_init_with_an_unknown_key_type_creates_nothing(cli: Cli, cli_home: Path) -> None:
    message = cli.refused("init", "--key-type", "dsa-1024")
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
