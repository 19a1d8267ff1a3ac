"""The command line with the store on PostgreSQL (IOTSEC_DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509

from tests.cli.support import Cli, on_postgresql
from tests.helpers import make_csr


@on_postgresql
def test_cli_on_postgresql(postgres_ready: dict[str, Any], cli: Cli, cli_home: Path,
                           tmp_path: Path) -> None:
    assert postgres_ready["created"] is True
    assert not (cli_home / "iotsec.db").exists()  # the store is PostgreSQL, not SQLite

    csv = tmp_path / "fleet.csv"
    csv.write_text("id,groups,attributes\n" + "".join(f"pg-{n},g,\n" for n in range(50)))
    assert cli.json("device", "import", str(csv)) == {"imported": 50}
    assert "already registered" in cli.refused("device", "import", str(csv))
    csr = tmp_path / "d.csr"
    csr.write_bytes(make_csr())
    issued = cli.json("cert", "issue", "pg-7", "--csr", str(csr), "--days", "20")
    assert [c["serial"] for c in cli.json("cert", "list", "--expiring-within", "30d")] == \
        [issued["serial"]]
    cli.ok("cert", "revoke", issued["serial"].lower(), "--reason", "superseded")
    assert "already revoked" in cli.ok("cert", "revoke", issued["serial"]).out
    crl = x509.load_pem_x509_crl(cli.ok("crl", "--pem").out.encode())
    entry = crl.get_revoked_certificate_by_serial_number(int(issued["serial"], 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is \
        x509.ReasonFlags.superseded
    assert cli.json("device", "show", "pg-7")["state"] == "active"
    assert len(cli.json("device", "list", "--limit", "100")) == 50
