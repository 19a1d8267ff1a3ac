"""``iotsec profile``, ``device set-profile``, ``group set-profile`` and ``cert issue
--profile``: --json and tables, what ``openssl x509 -text`` sees in the certificates, and
refusals that change nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import Cli
from tests.helpers import make_csr, make_key


def _state(cli: Cli) -> tuple[Any, ...]:
    return (cli.json("profile", "list"), cli.json("device", "list"),
            cli.json("cert", "list", "--limit", "100000"),
            cli.json("enrol", "template", "list"))


def _text(openssl: str, pem_path: Path) -> str:
    return subprocess.run([openssl, "x509", "-in", str(pem_path), "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout


@pytest.mark.usefixtures("ready")
def test_profile_commands_and_issued_certificates(cli: Cli, tmp_path: Path,
                                                  openssl: str) -> None:
    added = cli.json("profile", "add", "gateways", "--days", "90", "--key-types", "p256,p384",
                     "--dns-from", "attr:hostname", "--dns-from", "{device_id}.gw.example",
                     "--eku", "clientAuth,serverAuth")
    assert {k: v for k, v in added.items() if k != "created_at"} == {
        "name": "gateways", "builtin": False, "validity_days": 90, "key_types": ["p256", "p384"],
        "ekus": ["clientAuth", "serverAuth"],
        "dns_from": ["{device_id}.gw.example", "attr:hostname"], "no_revocation": False,
        "usage": None}
    cli.ok("profile", "add", "ephemeral", "--days", "1", "--key-types", "p256",
           "--no-revocation")
    listed = cli.json("profile", "list")
    assert [p["name"] for p in listed] == ["device", "server", "ephemeral", "gateways"]
    table = cli.ok("profile", "list").out
    assert "gateways" in table and "attr:hostname" in table

    cli.ok("device", "add", "gw-1", "--group", "sites", "--attr", "hostname=gw1.site.example")
    cli.ok("device", "add", "sensor-1")
    assert cli.json("group", "set-profile", "sites", "gateways") == {
        "kind": "group", "name": "sites", "profile": "gateways"}
    assert cli.json("device", "set-profile", "sensor-1", "ephemeral") == {
        "kind": "device", "name": "sensor-1", "profile": "ephemeral"}
    assert cli.json("device", "show", "sensor-1")["profile"] == "ephemeral"
    assert cli.json("device", "show", "gw-1")["profile"] is None  # its group's decides
    assert "ephemeral" in cli.ok("device", "show", "sensor-1").out
    shown = cli.json("profile", "show", "gateways")
    assert shown["usage"] == {"devices": 0, "groups": 1, "templates": 0}
    assert "1 group" in cli.ok("profile", "show", "gateways").out

    (tmp_path / "gw.csr").write_bytes(make_csr())
    gw = cli.json("cert", "issue", "gw-1", "--csr", str(tmp_path / "gw.csr"),
                  "-o", str(tmp_path / "gw.pem"))
    assert gw["profile"] == "gateways"
    text = _text(openssl, tmp_path / "gw.pem")
    assert "TLS Web Client Authentication, TLS Web Server Authentication" in text
    assert "DNS:gw-1.gw.example, DNS:gw1.site.example" in text
    assert "No Revocation Available" not in text and "2.5.29.56" not in text

    (tmp_path / "s.csr").write_bytes(make_csr())
    short = cli.json("cert", "issue", "sensor-1", "--csr", str(tmp_path / "s.csr"),
                     "-o", str(tmp_path / "s.pem"))
    assert short["profile"] == "ephemeral"
    text = _text(openssl, tmp_path / "s.pem")
    # OpenSSL 3.3+ names the extension; older ones print its OID.
    assert "No Revocation Available" in text or "2.5.29.56" in text
    assert "CRL Distribution Points" not in text
    dates = subprocess.run([openssl, "x509", "-in", str(tmp_path / "s.pem"), "-noout",
                            "-checkend", str(86_400 + 120)], capture_output=True, text=True)
    assert dates.returncode == 1  # expires within a day (and two minutes of back-dating)

    # An explicit --profile beats the device's; a removed selection falls back.
    (tmp_path / "x.csr").write_bytes(make_csr())
    assert cli.json("cert", "issue", "sensor-1", "--csr", str(tmp_path / "x.csr"),
                    "--profile", "server")["profile"] == "server"
    cli.ok("device", "set-profile", "sensor-1", "--clear")
    (tmp_path / "y.csr").write_bytes(make_csr())
    assert cli.json("cert", "issue", "sensor-1", "--csr", str(tmp_path / "y.csr"))[
        "profile"] == "device"
    cli.ok("group", "set-profile", "sites", "--clear")
    assert cli.json("profile", "remove", "gateways") == {"kind": "profile", "name": "gateways"}


@pytest.mark.usefixtures("ready")
def test_refusals_change_nothing(cli: Cli, tmp_path: Path) -> None:
    cli.ok("profile", "add", "p256-only", "--days", "30", "--key-types", "p256",
           "--dns-from", "attr:hostname")
    cli.ok("device", "add", "dev-1", "--group", "fleet")
    cli.ok("device", "set-profile", "dev-1", "p256-only")
    cli.ok("enrol", "template", "add", "t1", "--profile", "p256-only")
    (tmp_path / "rsa.csr").write_bytes(make_csr(make_key("rsa2048")))
    (tmp_path / "p256.csr").write_bytes(make_csr())
    before = _state(cli)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("profile", "add", "device", "--days", "1", "--key-types", "p256"), "built-in"),
        (("profile", "add", "p256-only", "--days", "1", "--key-types", "p256"),
         "already exists"),
        (("profile", "add", "Bad Name", "--days", "1", "--key-types", "p256"), "not valid"),
        (("profile", "add", "x", "--days", "0", "--key-types", "p256"), "out of range"),
        (("profile", "add", "x", "--days", "1", "--key-types", "dsa1024"), "unknown key type"),
        (("profile", "add", "x", "--days", "1", "--key-types", ","), "at least one key type"),
        (("profile", "add", "x", "--days", "1", "--key-types", "p256", "--eku", "codeSigning"),
         "unknown extended key usage"),
        (("profile", "add", "x", "--days", "1", "--key-types", "p256", "--dns-from",
          "attr:bad name"), "does not name a device attribute"),
        (("profile", "add", "x", "--days", "1", "--key-types", "p256", "--dns-from",
          "http://x/"), "neither attr:NAME nor a DNS name template"),
        (("profile", "add", "x", "--days", "8", "--key-types", "p256", "--no-revocation"),
         "at most 7 days"),
        (("profile", "show", "nothing"), "no certificate profile 'nothing'"),
        (("profile", "remove", "nothing"), "no certificate profile 'nothing'"),
        (("profile", "remove", "server"), "built-in"),
        (("profile", "remove", "p256-only"), "used by device 'dev-1'"),
        (("device", "set-profile", "dev-1", "nothing"), "no certificate profile"),
        (("device", "set-profile", "nobody", "server"), "does not exist"),
        (("group", "set-profile", "nogroup", "server"), "does not exist"),
        (("cert", "issue", "dev-1", "--csr", str(tmp_path / "rsa.csr")),
         "allows p256 keys; the CSR's key is rsa2048"),
        (("cert", "issue", "dev-1", "--csr", str(tmp_path / "p256.csr")),
         "attribute 'hostname', which device 'dev-1' does not have"),
        (("cert", "issue", "dev-1", "--csr", str(tmp_path / "p256.csr"), "--profile",
          "nothing"), "no certificate profile 'nothing'"),
    ]
    failures = []
    for args, message in cases:
        err = cli.refused(*args)
        if message not in err:
            failures.append((args, err))
    assert not failures
    assert cli("device", "set-profile", "dev-1").code == 2  # neither PROFILE nor --clear
    assert cli("device", "set-profile", "dev-1", "server", "--clear").code == 2
    assert _state(cli) == before
