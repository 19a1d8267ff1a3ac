"""``iotsec authz check`` run before Typer is imported (iotsec.cli.lean, ADR 0050): the same
interface as the Typer command, the same checks of the environment and the home (anything
else falls through to Typer), and the same answer, message and exit code, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from iotsec.access.quarantine import DEFAULT_TOPIC_PREFIX
from iotsec.app.direct_store import open_direct_store
from iotsec.cli import lean
from iotsec.cli.access_spec import AUTHZ_CHECK
from iotsec.cli.spec import parse
from iotsec.config import Settings
from iotsec.errors import IotsecError
from tests.cli.support import (
    OTHER_HOME_FILES,
    Cli,
    assert_parse_reads_what_click_reads,
    assert_spec_is_the_interface,
    count_lean_runs,
    home_file,
    lean_and_typer_agree,
    on_postgresql,
)


def test_the_spec_is_the_typer_commands_interface() -> None:
    assert_spec_is_the_interface(AUTHZ_CHECK)


#: Command lines after 'authz check': plain ones, and ones the parser must leave to Typer
#: (or read exactly as click does).
LINES: tuple[tuple[str, ...], ...] = (
    ("d", "publish", "t"), ("d", "publish", "t", "--json"), ("--json", "d", "publish", "t"),
    ("d", "--cert-serial", "0A", "publish", "t"), ("d", "publish", "t", "--cert-serial=0A"),
    ("d", "publish", "a b/#"), ("", "", ""), ("d", "publish", "t", "--cert-serial="),
    ("d", "publish"), ("d", "publish", "t", "x"), (), ("--help",), ("d", "publish", "t", "--help"),
    ("d", "publish", "-t"), ("d", "publish", "t", "--cert-serial"),
    ("d", "publish", "t", "--cert-serial", "1", "--cert-serial", "2"),
    ("d", "publish", "t", "--json", "--json"), ("d", "publish", "t", "--json=1"),
    ("d", "--", "publish", "-t"), ("d", "publish", "t", "--cert"), ("d", "publish", "t", "-x"),
    ("d", "publish", "t", "--JSON"),
)


def test_the_parser_reads_what_click_reads_or_leaves_it_to_typer() -> None:
    understood = assert_parse_reads_what_click_reads(AUTHZ_CHECK, LINES)
    assert parse(AUTHZ_CHECK, ("d", "publish", "t")) == {
        "device": "d", "action": "publish", "resource": "t", "cert_serial": None,
        "as_json": False}
    assert understood >= 8


def test_the_quarantine_topic_default_is_the_settings_default() -> None:
    assert Settings.model_fields["quarantine_topic"].default == DEFAULT_TOPIC_PREFIX


def _fleet(cli: Cli) -> None:
    """Devices in every state a decision tells apart, and roles that allow, deny and bind
    to the certificate's serial, directly and through a group."""
    cli.ok("role", "add", "reader", "--allow", "subscribe:fleet/#", "--deny",
           "subscribe:fleet/secret/#")
    cli.ok("role", "add", "by-cert", "--allow", "publish:certs/${cert.serial}/#")
    cli.ok("group", "add", "g", "--role", "reader")
    cli.ok("device", "add", "dev-1", "--group", "g", "--attr", "site=a")
    cli.ok("device", "add", "dev-2", "--role", "by-cert")
    cli.ok("device", "add", "dev-off")
    cli.ok("device", "disable", "dev-off")
    cli.ok("device", "add", "dev-q", "--group", "g")
    cli.ok("incident", "quarantine", "dev-q", "--reason", "test")


#: authz check command lines: allowed, denied by default, by a deny rule, by the device's
#: state, for a quarantined device, by the certificate's serial, in JSON, and refused (a
#: serial, a device, an id, an action, a topic that is not valid).
QUESTIONS: tuple[tuple[str, ...], ...] = (
    ("dev-1", "publish", "devices/dev-1/t"),
    ("dev-1", "publish", "devices/dev-2/t"),
    ("dev-1", "subscribe", "fleet/#"),
    ("dev-1", "subscribe", "fleet/a"),
    ("dev-1", "subscribe", "fleet/secret/x"),
    ("dev-1", "subscribe", "fleet/a", "--json"),
    ("dev-1", "receive", "fleet/secret/x", "--json"),
    ("dev-off", "publish", "devices/dev-off/t"),
    ("dev-q", "subscribe", "fleet/a"),
    ("dev-q", "publish", "quarantine/dev-q/status"),
    ("dev-q", "publish", "quarantine/dev-q/status", "--json"),
    ("dev-2", "publish", "certs/0A1B/x", "--cert-serial", "0a1b"),
    ("dev-2", "publish", "certs/0A1B/x", "--cert-serial", "0c"),
    ("dev-2", "publish", "certs/0A1B/x"),
    ("dev-2", "publish", "certs/0A1B/x", "--cert-serial", "zz"),
    ("ghost", "publish", "t"),
    ("not a device!", "publish", "t"),
    ("dev-1", "teleport", "t"),
    ("dev-1", "publish", "a/#/b"),
    ("dev-1", "publish", "t\x1b[2J"),
)


def _ask(cli: Cli) -> list[tuple[int, str, str]]:
    return [(r.code, r.out, r.err) for r in (cli("authz", "check", *q) for q in QUESTIONS)]


def _same_answers(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """What every question gets before Typer and through it, which must be the same."""
    return lean_and_typer_agree(monkeypatch, lambda: _ask(cli), len(QUESTIONS))


def _check_answers(answers: list[tuple[int, str, str]]) -> None:
    words = [(code, out.split(":")[0] if out and not out.startswith("{") else
              json.loads(out)["decision"] if out else err.split(":")[1].strip())
             for code, out, err in answers]
    assert words == [
        (0, "allow"), (1, "deny"), (1, "deny"), (0, "allow"), (1, "deny"), (0, "allow"),
        (1, "deny"), (1, "deny"), (1, "deny"), (0, "allow"), (0, "allow"), (0, "allow"),
        (1, "deny"), (1, "deny"), (1, "error"), (1, "error"), (1, "error"), (1, "error"),
        (1, "error"), (1, "deny")]
    # The deny rule wins over the allow for a filter that reaches it; the device's state
    # decides before its roles; a quarantined device gets the quarantine role only.
    assert "deny subscribe:fleet/secret/#" in answers[2][1]
    assert "disabled" in answers[7][1] and "quarantined" in answers[8][1]
    assert "role 'quarantine'" in answers[9][1] and "by-cert" in answers[11][1]


def test_the_lean_path_and_typer_answer_the_same(ready: dict[str, Any], cli: Cli,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _fleet(cli)
    _check_answers(_same_answers(cli, monkeypatch))


@on_postgresql
def test_the_lean_path_and_typer_answer_the_same_on_postgresql(
        postgres_ready: dict[str, Any], cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _fleet(cli)
    _check_answers(_same_answers(cli, monkeypatch))
    # The passphrase may come from the environment instead of the home's file.
    secret = Path(os.environ["IOTSEC_HOME"]) / "ca-passphrase"
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", secret.read_text().strip())
    secret.unlink()
    _same_answers(cli, monkeypatch)


def _environ(home: Path, **more: str) -> dict[str, str]:
    return {"IOTSEC_HOME": str(home), "PATH": "/usr/bin", **more}


def _opens(environ: dict[str, str]) -> bool:
    store = open_direct_store(environ)
    if store is None:
        return False
    store.close()
    return True


def test_every_other_home_falls_through_to_the_runtime(ready: dict[str, Any], cli: Cli,
                                                       cli_home: Path,
                                                       tmp_path: Path) -> None:
    assert _opens(_environ(cli_home)) and _opens(_environ(cli_home, IOTSEC_DEBUG="1"))
    assert _opens(_environ(cli_home, IOTSEC_CA_PASSPHRASE="given"))
    # Any other setting (validated by the settings model), one given twice, or empty.
    for name in ("IOTSEC_QUARANTINE_TOPIC", "IOTSEC_KEYSTORE", "iotsec_hot_cache_seconds",
                 "IOTSEC_NO_SUCH_SETTING"):
        assert not _opens(_environ(cli_home, **{name: "x" * 20})), name
    assert not _opens({"IOTSEC_HOME": str(cli_home), "iotsec_home": str(cli_home)})
    assert not _opens({"IOTSEC_HOME": ""})
    assert not _opens(_environ(cli_home, IOTSEC_CA_PASSPHRASE=""))
    assert not _opens(_environ(tmp_path / "nowhere"))
    # A URL the driver is not given as it is.
    assert not _opens(_environ(cli_home, IOTSEC_DATABASE_URL=f"sqlite:///{cli_home}/x.db"))
    # A store in another database, a token.
    for name, content in OTHER_HOME_FILES:
        with home_file(cli_home, name, content):
            assert not _opens(_environ(cli_home)), (name, content)
    # No passphrase the runtime would read.
    secret = cli_home / "ca-passphrase"
    secret.chmod(0o644)
    assert not _opens(_environ(cli_home))
    assert _opens(_environ(cli_home, IOTSEC_CA_PASSPHRASE="given"))
    secret.chmod(0o600)
    kept_secret = secret.read_bytes()
    secret.unlink()
    assert not _opens(_environ(cli_home))
    secret.write_bytes(kept_secret)
    secret.chmod(0o600)
    # A store that is not migrated.
    import sqlite3

    with sqlite3.connect(cli_home / "iotsec.db") as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert not _opens(_environ(cli_home))
    with sqlite3.connect(cli_home / "iotsec.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (version,))
    assert _opens(_environ(cli_home))


def test_a_setting_the_lean_path_does_not_read_is_obeyed_through_typer(
        ready: dict[str, Any], cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    _fleet(cli)
    calls = count_lean_runs(monkeypatch)
    monkeypatch.setenv("IOTSEC_QUARANTINE_TOPIC", "remedy")
    assert cli("authz", "check", "dev-q", "publish", "remedy/dev-q/x").code == 0
    assert cli("authz", "check", "dev-q", "publish", "quarantine/dev-q/x").code == 1
    assert calls == [None, None]


@pytest.mark.postgres
def test_an_unreachable_database_is_the_runtimes_error(ready: dict[str, Any], cli: Cli,
                                                       cli_home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.ports import free_port

    url = f"postgresql+psycopg://iotsec@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    with pytest.raises(IotsecError) as refused:
        open_direct_store(_environ(cli_home, IOTSEC_DATABASE_URL=url))
    monkeypatch.setenv("IOTSEC_DATABASE_URL", url)
    calls = count_lean_runs(monkeypatch)
    by_lean = cli("authz", "check", "dev-1", "publish", "t")
    monkeypatch.setattr(lean, "run", lambda args: None)
    by_typer = cli("authz", "check", "dev-1", "publish", "t")
    assert calls == ["raised"]
    assert by_lean == by_typer and by_lean.code == 1
    assert str(refused.value).split(" (")[0] in by_lean.err
