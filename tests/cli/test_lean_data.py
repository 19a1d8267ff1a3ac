"""``iotsec data encrypt|decrypt`` run before Typer is imported (iotsec.cli.lean, ADR 0033):
the same interface as the Typer commands, the same home checks (anything else falls through
to Typer), and the same outcome: file, record, events and exit code."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from iotsec.app.direct_home import open_direct_home
from iotsec.app.direct_store import DEFAULT_HOME, KEYS_DIR, PASSPHRASE_FILE, SQLITE_FILE
from iotsec.cli import lean
from iotsec.cli.data_spec import DECRYPT, ENCRYPT
from iotsec.cli.spec import CommandSpec, parse
from iotsec.config import Settings
from iotsec.custody.home import KEK_DIR
from iotsec.errors import ConflictError
from iotsec.store.reader import connect_sqlite
from iotsec.store.writer import write_transaction
from tests.cli.support import (
    OTHER_HOME_FILES,
    Cli,
    assert_parse_reads_what_click_reads,
    assert_refused,
    assert_spec_is_the_interface,
    count_lean_runs,
    home_file,
)

SPECS = (ENCRYPT, DECRYPT)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: " ".join(s.path))
def test_the_spec_is_the_typer_commands_interface(spec: CommandSpec) -> None:
    assert_spec_is_the_interface(spec)


#: Command lines after 'data encrypt|decrypt': plain ones, and ones the parser must leave
#: to Typer (or read exactly as click does).
LINES: tuple[tuple[str, ...], ...] = (
    ("a", "b"), ("a", "b", "--json"), ("--json", "a", "b"), ("a", "--json", "b"),
    ("-", "-"), ("-", "out"), ("", "b"), ("a b", "c=d"),
    ("a", "--chunk-size", "16KiB", "b"), ("a", "b", "--chunk-size=4KiB"),
    ("--chunk-size", "1MiB", "--json", "a", "b"), ("a", "b", "--chunk-size="),
    ("a",), (), ("a", "b", "c"), ("--help",), ("a", "b", "--help"),
    ("a", "b", "--json", "--json"), ("a", "b", "--json=1"), ("a", "b", "--chunk-size"),
    ("a", "--", "-b"), ("a", "b", "-x"), ("a", "b", "--chunk-size", "-1"),
    ("a", "b", "--chunk-size", "1", "--chunk-size", "2"), ("a", "b", "--chunk"),
    ("a", "b", "--JSON"), ("-a", "b"),
)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: " ".join(s.path))
def test_the_parser_reads_what_click_reads_or_leaves_it_to_typer(spec: CommandSpec) -> None:
    understood = assert_parse_reads_what_click_reads(spec, LINES)
    # The plain command lines are read here, not left to Typer.
    assert parse(spec, ("a", "b")) == {**dict.fromkeys(spec.arguments), "source": "a",
                                       "output": "b", "as_json": False,
                                       **{p: d for _f, p, d in spec.options}}
    assert understood >= 8


def _rows(home: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(home / "iotsec.db") as conn:
        events = conn.execute("SELECT kind, outcome, actor, source, subject, detail FROM "
                              "events WHERE kind IN ('data.encrypt', 'data.decrypt', "
                              "'key.use') ORDER BY seq").fetchall()
        files = conn.execute("SELECT kek_id, path FROM encrypted_files ORDER BY "
                             "created_at, path").fetchall()
    return events, files


def _session(cli: Cli, work: Path) -> list[tuple[int, str, str]]:
    """A series of data commands, successful and refused; what each printed."""
    (work / "plain").write_bytes(b"p" * 70_000)
    (work / "garbage").write_bytes(b"not encrypted")
    lines = [
        ("data", "encrypt", "plain", "sealed", "--chunk-size", "4KiB"),
        ("data", "encrypt", "plain", "sealed.json", "--json"),
        ("data", "decrypt", "sealed", "back"),
        ("data", "decrypt", "sealed.json", "back.json", "--json"),
        ("data", "decrypt", "garbage", "nothing"),
        ("data", "decrypt", "sealed", "back"),
        ("data", "encrypt", "missing", "x"),
        ("data", "encrypt", "plain", "y", "--chunk-size", "1000"),
        ("data", "decrypt", "sealed", "-"),
    ]
    seen = []
    for line in lines:
        result = cli(*line)
        if result.code:
            assert_refused(result)
        out = result.out
        if "--json" in line and result.code == 0:
            out = json.dumps({k: v for k, v in json.loads(out).items() if k != "kek_id"})
        seen.append((result.code, out, result.err.replace(str(work), "<w>")))
    assert (work / "back").read_bytes() == (work / "plain").read_bytes()
    assert not (work / "nothing").exists() and not (work / "y").exists()
    return seen


def test_the_lean_path_and_typer_do_the_same(ready: dict[str, Any], cli: Cli,
                                             cli_home: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_lean_runs(monkeypatch)
    lean_work = tmp_path / "lean"
    lean_work.mkdir()
    monkeypatch.chdir(lean_work)
    by_lean = _session(cli, lean_work)
    lean_rows = _rows(cli_home)
    # The first encryption makes the home's first KEK, through the runtime; every later
    # command ran here, refusals included.
    assert calls[0] is None and None not in calls[1:] and len(calls) == len(by_lean)

    # The same session through the Typer commands, on a second home.
    monkeypatch.setattr(lean, "run", lambda args: None)
    other = tmp_path / "home2"
    monkeypatch.setenv("IOTSEC_HOME", str(other))
    cli.ok("init", "--store-passphrase")
    typer_work = tmp_path / "typer"
    typer_work.mkdir()
    monkeypatch.chdir(typer_work)
    by_typer = _session(cli, typer_work)
    normal = [(c, o, e.replace(_kek(cli_home), "KEK")) for c, o, e in by_lean]
    assert normal == [(c, o, e.replace(_kek(other), "KEK")) for c, o, e in by_typer]
    typer_rows = _rows(other)

    def same(rows: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]], home: Path,
             work: Path) -> Any:
        text = json.dumps(rows).replace(_kek(home), "KEK").replace(str(work), "<w>")
        return json.loads(text)

    assert same(lean_rows, cli_home, lean_work) == same(typer_rows, other, typer_work)
    assert len(lean_rows[0]) >= 6 and len(lean_rows[1]) == 2
    # The chain both wrote verifies.
    for home in (cli_home, other):
        monkeypatch.setenv("IOTSEC_HOME", str(home))
        assert "intact" in cli.ok("events", "verify").out


def _kek(home: Path) -> str:
    return (home / "keys" / "kek" / "active").read_text().strip()


def _environ(home: Path, **more: str) -> dict[str, str]:
    return {"IOTSEC_HOME": str(home), "PATH": "/usr/bin", **more}


def test_a_plain_home_opens_directly_with_the_settings_paths(ready: dict[str, Any], cli: Cli,
                                                             cli_home: Path,
                                                             tmp_path: Path) -> None:
    # No KEK is active before the first encryption: that one makes it through the runtime.
    assert open_direct_home(_environ(cli_home)) is None
    (tmp_path / "f").write_bytes(b"x")
    cli.ok("data", "encrypt", str(tmp_path / "f"), str(tmp_path / "f.enc"))
    home = open_direct_home(_environ(cli_home))
    assert home is not None
    try:
        settings = Settings(home=cli_home)
        assert home.sqlite_file == settings.resolved_home / SQLITE_FILE
        assert settings.store_url == f"sqlite:///{home.sqlite_file}"
        assert home.keks.directory == settings.keys_dir / KEK_DIR
        assert settings.keys_dir == settings.resolved_home / KEYS_DIR
        assert settings.passphrase_file == settings.resolved_home / PASSPHRASE_FILE
        assert Settings.model_fields["home"].default == Path(DEFAULT_HOME)
    finally:
        home.close()
    assert open_direct_home(_environ(cli_home, IOTSEC_DEBUG="1")) is not None


def test_every_other_home_falls_through_to_the_runtime(ready: dict[str, Any], cli: Cli,
                                                       cli_home: Path,
                                                       tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    cli.ok("data", "encrypt", str(tmp_path / "f"), str(tmp_path / "f.enc"))
    assert open_direct_home(_environ(cli_home)) is not None
    # Any setting in the environment (validated by the settings model).
    for name in ("IOTSEC_CA_PASSPHRASE", "IOTSEC_DATABASE_URL", "IOTSEC_KEYSTORE",
                 "iotsec_crl_lifetime_hours", "IOTSEC_NO_SUCH_SETTING"):
        assert open_direct_home(_environ(cli_home, **{name: "x" * 20})) is None, name
    assert open_direct_home({"IOTSEC_HOME": str(cli_home),
                             "iotsec_home": str(cli_home)}) is None
    assert open_direct_home({"IOTSEC_HOME": ""}) is None
    assert open_direct_home(_environ(tmp_path / "nowhere")) is None
    # A store in another database, a token, a passphrase home.
    for name, content in OTHER_HOME_FILES:
        with home_file(cli_home, name, content):
            assert open_direct_home(_environ(cli_home)) is None, (name, content)
    secret = cli_home / "ca-passphrase"
    kept_secret = secret.read_bytes()
    secret.write_bytes(b"a passphrase someone chose\n")
    assert open_direct_home(_environ(cli_home)) is None
    secret.write_bytes(kept_secret)
    secret.chmod(0o644)
    assert open_direct_home(_environ(cli_home)) is None
    secret.chmod(0o600)
    # A store that is not migrated.
    with sqlite3.connect(cli_home / "iotsec.db") as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert open_direct_home(_environ(cli_home)) is None
    with sqlite3.connect(cli_home / "iotsec.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (version,))
    assert open_direct_home(_environ(cli_home)) is not None


def test_a_unit_of_work_on_the_driver_is_all_or_nothing(ready: dict[str, Any],
                                                        cli_home: Path) -> None:
    conn = connect_sqlite(cli_home / "iotsec.db")
    try:
        row = {"id": "f" * 64, "kek_id": "kek-x", "path": "/p", "created_at": 1}
        insert = ("INSERT INTO encrypted_files (id, kek_id, path, created_at) "
                  "VALUES (:id, :kek_id, :path, :created_at)")
        with pytest.raises(ConflictError), \
                write_transaction(conn, sqlite_file=cli_home / "iotsec.db") as writer:
            writer.execute(insert, row)
            writer.execute(insert, row)
        assert conn.execute("SELECT count(*) FROM encrypted_files").fetchone() == (0,)
        assert not conn.in_transaction
        with write_transaction(conn, sqlite_file=cli_home / "iotsec.db") as writer:
            writer.execute(insert, row)
        assert conn.execute("SELECT count(*) FROM encrypted_files").fetchone() == (1,)
    finally:
        conn.close()
