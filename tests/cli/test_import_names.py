"""``iotsec device import`` on SQLite and PostgreSQL (``COPY``, the foreign keys' per-row
checks skipped): each device's group and role names on its row equal its links (migration
0028)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotsec.app.runtime import open_runtime
from iotsec.config import Settings
from tests.cli.support import Cli
from tests.store.link_names import names_of


def test_the_cli_import_writes_names_equal_to_the_links(
        cli: Cli, cli_home: Path, tmp_path: Path, database_url: str | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    if database_url is not None:
        monkeypatch.setenv("IOTSEC_DATABASE_URL", database_url)
    cli.json("init", "--store-passphrase")
    csv = tmp_path / "fleet.csv"
    csv.write_text("id,groups,attributes\n" + "".join(
        f"f-{n},{';'.join(['east', 'core', 'b2'][:n % 4])},site=x\n" for n in range(40)))
    assert cli.json("device", "import", str(csv)) == {"imported": 40}
    rt = open_runtime(Settings())
    try:
        names = names_of(rt)
    finally:
        rt.close()
    assert names["f-3"] == ("b2 core east", "device")
    assert names["f-4"] == ("", "device")
