"""``iotsec device import FILE.csv``: all or nothing."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from tests.cli.support import Cli


def _csv(path: Path, ids: list[str]) -> Path:
    lines = ["id,groups,attributes"]
    for n, device in enumerate(ids):
        lines.append(f"{device},fleet;batch-{n % 3},model=t{n % 5};site=north")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_import_of_a_thousand_devices(cli: Cli, ready: object, tmp_path: Path) -> None:
    ids = [f"dev-{n:04d}" for n in range(1000)]
    result = cli.ok("device", "import", str(_csv(tmp_path / "fleet.csv", ids)))
    assert "Imported 1000 devices" in result.out
    listed = cli.json("device", "list", "--limit", "5000")
    assert [d["id"] for d in listed] == ids
    assert {d["state"] for d in listed} == {"pending"}
    one = cli.json("device", "show", "dev-0007")
    assert one["groups"] == ["batch-1", "fleet"]
    assert one["attributes"] == {"model": "t2", "site": "north"}
    assert len(cli.json("device", "list", "--group", "batch-1", "--limit", "5000")) == 333
    page = cli.json("device", "list", "--after", "dev-0997")
    assert [d["id"] for d in page] == ["dev-0998", "dev-0999"]


def test_import_json(cli: Cli, ready: object, tmp_path: Path) -> None:
    path = _csv(tmp_path / "few.csv", ["a-1", "a-2"])
    assert cli.json("device", "import", str(path)) == {"imported": 2}


def test_a_bad_id_on_line_5_imports_nothing(cli: Cli, ready: object, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,groups,attributes\n"
                    "ok-1,g,\n"
                    "ok-2,g,\n"
                    "ok-3,g,\n"
                    "bad/id,g,\n"
                    "ok-4,g,\n")
    message = cli.refused("device", "import", str(path))
    assert "line 5" in message
    assert "bad/id" in message
    assert cli.json("device", "list") == []


def test_an_already_registered_id_imports_nothing(cli: Cli, ready: object,
                                                  tmp_path: Path) -> None:
    cli.ok("device", "add", "dev-0500")
    ids = [f"dev-{n:04d}" for n in range(1000)]
    message = cli.refused("device", "import", str(_csv(tmp_path / "fleet.csv", ids)))
    assert "dev-0500" in message
    assert [d["id"] for d in cli.json("device", "list")] == ["dev-0500"]


def test_other_bad_files_import_nothing(cli: Cli, ready: object, tmp_path: Path) -> None:
    cases = {
        "dup.csv": ("id,groups,attributes\nx-1,,\nx-2,,\nx-1,,\n", "twice"),
        "noid.csv": ("name,groups\nx-1,\n", "'id' column"),
        "attr.csv": ("id,groups,attributes\nx-1,,novalue\n", "line 2"),
        "group.csv": ("id,groups,attributes\nx-1,bad group,\n", "line 2"),
        "latin1.csv": ("id,groups,attributes\ncaf\u00e9,,\n", "UTF-8"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(text.encode("latin-1"))
        assert expected in cli.refused("device", "import", str(path)), name
    assert "does not exist" in cli.refused("device", "import", str(tmp_path / "missing.csv"))
    assert cli.json("device", "list") == []


def test_import_from_standard_input(cli: Cli, ready: object, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"id,groups,attributes\nin-1,g,\nin-2,g,model=x\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert cli.json("device", "import", "-") == {"imported": 2}
    assert cli.json("device", "show", "in-2")["attributes"] == {"model": "x"}


def test_a_duplicate_far_into_the_file_is_named_by_its_line(cli: Cli, ready: object,
                                                            tmp_path: Path) -> None:
    ids = [f"dev-{n:05d}" for n in range(12_000)] + ["dev-00003"]
    message = cli.refused("device", "import", str(_csv(tmp_path / "fleet.csv", ids)))
    assert "line 12002" in message and "dev-00003" in message and "twice" in message
    assert cli.json("device", "list") == []
    assert "is a directory" in cli.refused("device", "import", str(tmp_path))
