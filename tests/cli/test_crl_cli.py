"""``iotsec crl --delta`` and ``iotsec crl --partition K``."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from tests.cli.support import Cli
from tests.helpers import make_csr


def test_crl_delta_and_partition(cli: Cli, ready: object, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_CRL_URL", "http://pki.example.com/crl")
    monkeypatch.setenv("IOTSEC_CRL_PARTITIONS", "2")
    cli.ok("device", "add", "dev-1")
    csr = tmp_path / "d.csr"
    csr.write_bytes(make_csr())
    serial = cli.json("cert", "issue", "dev-1", "--csr", str(csr))["serial"]
    cli.ok("cert", "revoke", serial)
    complete = x509.load_pem_x509_crl(cli.ok("crl", "--pem").out.encode())
    number = complete.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    cli.ok("crl", "--delta", "-o", str(tmp_path / "delta.der"))
    delta = x509.load_der_x509_crl((tmp_path / "delta.der").read_bytes())
    assert delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value \
        .crl_number == number
    root = x509.load_pem_x509_crl(cli.ok("crl", "--delta", "--ca", "root", "--pem").out.encode())
    assert root.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    k = int(serial, 16) % 2
    part = x509.load_pem_x509_crl(cli.ok("crl", "--partition", str(k), "--pem").out.encode())
    assert [e.serial_number for e in part] == [int(serial, 16)]
    assert "no CRL partition 2" in cli.refused("crl", "--partition", "2", "--pem")


def test_crl_scope_options_refused(cli: Cli, ready: object) -> None:
    assert "partitioning is off" in cli.refused("crl", "--partition", "0", "--pem")
    for args in (("--delta", "--partition", "1"), ("--partition", "-1"),
                 ("--partition", "x"), ("--partition", "1", "--ca", "root")):
        result = cli("crl", *args, "--pem")
        assert result.code == 2, (args, result)
        assert "Traceback" not in result.out + result.err
    assert "unknown CA" in cli.refused("crl", "--delta", "--ca", "other", "--pem")
