"""The root command loads a command group only when it is called: ``iotsec --version``
imports none of them, nor the store, and every command in the table is reachable."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
from typer._click.utils import make_default_short_help
from typer.core import TyperGroup

from iotsec.cli.root import COMMANDS, app
from iotsec.errors import _DOMAINS
from tests.cli.support import Cli, on_postgresql

PROBE = """
import json, sys
from iotsec.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


#: The entry point and the root command: what every command loads.
ROOT = frozenset({"iotsec.cli.main", "iotsec.cli.root"})


def _run(*args: str) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, timeout=120, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), done.stdout


def test_version_loads_no_command_and_no_store() -> None:
    code, modules, out = _run("--version")
    assert code == 0 and out.startswith("iotsec ")
    loaded = {m for m in modules if m.startswith("iotsec.cli.") and m not in ROOT}
    assert loaded == set()
    assert not {"sqlalchemy", "pydantic", "cryptography", "rich"} & {
        m.split(".")[0] for m in modules}


def test_a_command_loads_only_its_own_group() -> None:
    code, modules, _ = _run("device", "--help")
    assert code == 0
    assert "iotsec.cli.devices" in modules
    assert not {"iotsec.cli.scan", "iotsec.cli.serve", "iotsec.cli.firmware",
                "iotsec.cli.broker"} & modules


def test_every_command_of_the_table_resolves_under_its_name() -> None:
    root = typer.main.get_command(app)
    ctx = root.context_class(root)
    names = root.list_commands(ctx)  # type: ignore[attr-defined]
    assert names == [name for name, _target, _help in COMMANDS]
    for name in names:
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command is not None and command.name == name
        assert command.help, name


def test_the_help_texts_of_the_table_are_the_commands_own() -> None:
    # ``iotsec --help`` lists the commands from the table's texts: each must be the first
    # paragraph of the help of the command it names, and the command must be listed.
    root = typer.main.get_command(app)
    ctx = root.context_class(root)
    for name, _target, text in COMMANDS:
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command is not None and command.help, name
        assert not command.hidden and not command.deprecated and command.short_help is None
        first = " ".join(command.help.split("\n\n")[0].split())
        assert text == first, name
        for limit in (20, 45, 60, 120):
            assert make_default_short_help(text, limit).strip() == \
                command.get_short_help_str(limit), (name, limit)


def test_top_level_help_imports_no_command_and_lists_them_all() -> None:
    code, modules, out = _run("--help")
    assert code == 0
    assert {m for m in modules if m.startswith("iotsec.cli.") and m not in ROOT} == set()
    assert not {"sqlalchemy", "pydantic", "cryptography", "rich"} & {
        m.split(".")[0] for m in modules}
    # The same page as click would write with every command loaded.
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="iotsec")
    for name, _target, _help in COMMANDS:
        root.get_command(ctx, name)  # type: ignore[attr-defined]
    formatter = ctx.make_formatter()
    TyperGroup.format_commands(root, ctx, formatter)  # type: ignore[arg-type]
    loaded = formatter.getvalue()
    assert loaded.startswith("Commands:") and loaded.strip() in out
    assert out.index("Commands:") > out.index("Options:")
    assert [line.split()[0] for line in loaded.splitlines()[1:]] == \
        [name for name, _target, _help in COMMANDS]


def test_an_unknown_command_is_a_usage_error() -> None:
    code, modules, _ = _run("no-such-command")
    assert code == 2
    assert "sqlalchemy" not in modules


#: What the read commands start without: the services that change devices and certificates
#: (roles, the broker, EST, issuance), the key code (the CA signer, KEKs, firmware and
#: payload keys), the CRL encoder, the settings loader of pydantic-settings and Rich's
#: progress bars. A module named here and imported again is a start-up regression.
NOT_FOR_READING = ("pydantic_settings", "dotenv", "joserfc", "yaml", "rich.progress",
                   "iotsec.app.broker", "iotsec.app.enrol", "iotsec.app.access",
                   "iotsec.app.pki.issuance", "iotsec.app.pki.revocation",
                   "iotsec.custody.keks", "iotsec.pki.ca", "iotsec.pki.crl", "iotsec.pki.csr",
                   "iotsec.firmware", "iotsec.protect", "iotsec.broker")


def _loaded(modules: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


def test_read_commands_start_without_write_services_and_key_code(ready: dict[str, Any],
                                                                   cli: Cli,
                                                                   tmp_path: Path) -> None:
    cli.ok("device", "add", "dev-1")
    cli.ok("cert", "issue", "dev-1", "--keygen", "-o", str(tmp_path / "dev-1"))
    code, modules, out_list = _run("cert", "list", "--json")
    assert code == 0 and json.loads(out_list)[0]["device_id"] == "dev-1"
    # Listing certificates parses none of them (no cryptography at all), and JSON output
    # needs no console (no Rich).
    assert _loaded(modules, (*NOT_FOR_READING, "cryptography", "iotsec.access", "rich")
                   ) == set()
    code, modules, out = _run("device", "show", "dev-1")
    assert code == 0 and "dev-1" in out
    # Its tables to a pipe are plain columns: no Rich either, and no wire model (JSON only).
    assert _loaded(modules, (*NOT_FOR_READING, "rich", "iotsec.app.wire")) == set()
    # Both read the SQLite store on the standard library's driver (store/reader.py).
    for args in (("cert", "list", "--json"), ("device", "show", "dev-1", "--json"),
                 ("cert", "show", json.loads(out_list)[0]["serial"], "--json")):
        code, modules, out = _run(*args)
        assert code == 0 and '"dev-1"' in out, args
        assert _loaded(modules, ("sqlalchemy",)) == set(), args
        # 'cert list' and 'device show' run before Typer (iotsec.cli.lean, ADR 0051): no
        # Typer, no pydantic (no settings model, no wire model), no runtime.
        if args[1] != "show" or args[0] == "device":
            assert _loaded(modules, ("typer", "click", "pydantic", "pydantic_core",
                                     "iotsec.config", "iotsec.app.runtime")) == set(), args


def _authz_check_reads_on_the_driver(cli: Cli) -> None:
    cli.ok("device", "add", "dev-1")
    cli.ok("role", "add", "reader", "--allow", "subscribe:fleet/#")
    cli.ok("group", "add", "g", "--role", "reader")
    for args, code, answer in (
            (("dev-1", "publish", "devices/dev-1/t"), 0, "allow"),
            (("dev-1", "publish", "devices/dev-2/t"), 1, "deny"),
            (("dev-1", "subscribe", "fleet/#"), 1, "deny")):
        done, modules, out = _run("authz", "check", *args)
        assert (done, out.split(":")[0]) == (code, answer), args
        # The roles, group bindings and the device's entry are read on the driver
        # (store/reader.py): no SQLAlchemy, and no write service. The answer is one plain
        # line: no Rich. The command runs before Typer (iotsec.cli.lean, ADR 0050): no
        # Typer, no settings model, no runtime, and none of the serving process's caches.
        assert _loaded(modules, ("sqlalchemy", "iotsec.app.broker", "iotsec.app.enrol",
                                 "iotsec.app.pki", "iotsec.custody.keks", "iotsec.pki.ca",
                                 "iotsec.app.access.roles", "iotsec.app.events", "rich",
                                 "typer", "click", "pydantic", "pydantic_core",
                                 "iotsec.config", "iotsec.app.runtime", "iotsec.cli.root",
                                 "iotsec.cli.access", "iotsec.app.access.decisions",
                                 "cryptography")
                       ) == set(), args
    done, _, out = _run("authz", "check", "ghost", "publish", "t")
    assert done == 1 and out == ""
    # A command line the lean parser leaves to Typer still runs (through Typer).
    done, modules, out = _run("authz", "check", "--help")
    assert done == 0 and "--cert-serial" in out and "typer" in modules


def test_authz_check_imports_no_sqlalchemy(ready: dict[str, Any], cli: Cli) -> None:
    _authz_check_reads_on_the_driver(cli)


@on_postgresql
def test_authz_check_on_postgresql_imports_no_sqlalchemy(postgres_ready: dict[str, Any],
                                                         cli: Cli) -> None:
    # A PostgreSQL home is read on psycopg itself until a path needs the engine.
    _authz_check_reads_on_the_driver(cli)


def test_group_help_imports_no_service() -> None:
    code, modules, out = _run("authz", "--help")
    assert code == 0 and "check" in out
    assert _loaded(modules, ("sqlalchemy", "cryptography", "iotsec.app.access",
                             "iotsec.app.pki")) == set()


#: What ``iotsec data encrypt|decrypt`` start without (their whole-process time is a goal of
#: its own): the payload commands' code and keys, X.509, the CA, and Rich for the one line
#: they print.
NOT_FOR_DATA = ("iotsec.app.payloads", "iotsec.cli.protect", "iotsec.protect.pairing",
                "iotsec.protect.payload", "iotsec.protect.cose", "iotsec.protect.replay",
                "cryptography.x509", "iotsec.pki.ca", "iotsec.pki.x509", "rich",
                "pydantic_settings")


def test_data_commands_start_without_payload_code_x509_or_rich(ready: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    plain, sealed, back = tmp_path / "in", tmp_path / "in.enc", tmp_path / "back"
    plain.write_bytes(b"x" * 100_000)
    code, modules, _ = _run("data", "encrypt", str(plain), str(sealed))
    assert code == 0 and sealed.exists()
    assert _loaded(modules, NOT_FOR_DATA) == set()
    code, modules, _ = _run("data", "decrypt", str(sealed), str(back))
    assert code == 0 and back.read_bytes() == plain.read_bytes()
    assert _loaded(modules, NOT_FOR_DATA) == set()


#: What ``iotsec data encrypt|decrypt`` start without once the home has its KEK (the first
#: one is made through the runtime): they run before Typer is imported (iotsec.cli.lean).
NOT_FOR_LEAN_DATA = ("typer", "click", "pydantic", "pydantic_core", "rich", "sqlalchemy",
                     "iotsec.cli.root", "iotsec.cli.data", "iotsec.config",
                     "iotsec.app.runtime", "iotsec.app.events",
                     # Nor what the five-line script they are measured against does without:
                     # hashlib's and hmac's OpenSSL binding (cryptography's digests serve),
                     # secrets and random (os.urandom), base64 (binascii), threading, and the
                     # errors of other domains than the root's, data protection's and keys'.
                     "hashlib", "hmac", "secrets", "random", "base64", "threading",
                     *(f"iotsec.errors.{domain}" for domain in _DOMAINS
                       if domain not in ("protect", "keys")))


def test_data_encrypt_and_decrypt_import_neither_typer_pydantic_rich_nor_sqlalchemy(
        ready: dict[str, Any], cli: Cli, tmp_path: Path) -> None:
    plain, sealed, back = tmp_path / "in", tmp_path / "in.enc", tmp_path / "back"
    plain.write_bytes(b"x" * 100_000)
    cli.ok("data", "encrypt", str(plain), str(tmp_path / "first.enc"))
    for args in (("data", "encrypt", str(plain), str(sealed), "--chunk-size", "16KiB"),
                 ("data", "decrypt", str(sealed), str(back), "--json")):
        code, modules, _ = _run(*args)
        assert code == 0, args
        assert _loaded(modules, NOT_FOR_LEAN_DATA) == set(), args
    assert back.read_bytes() == plain.read_bytes()
    # A command line the lean parser leaves to Typer still runs (through Typer).
    code, modules, out = _run("data", "encrypt", "--help")
    assert code == 0 and "--chunk-size" in out and "typer" in modules


def test_a_scan_reads_the_fleet_cas_and_records_its_event_without_sqlalchemy(
        ready: dict[str, Any], cli: Cli) -> None:
    # A port that nothing listens on: the scan itself is quick, and still reads the home's
    # CA certificates and appends its scan.run event to the chain (store/writer.py).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, modules, out = _run("scan", "127.0.0.1", "--ports", str(port), "--json",
                              "--fail-on", "never")
    assert code == 0
    assert any("judged against 2 fleet CA certificates" in note
               for note in json.loads(out)["notes"])
    assert _loaded(modules, ("sqlalchemy", "iotsec.store.models", "iotsec.app.events")
                   ) == set()
    [event] = cli.json("events", "list", "--kind", "scan.run", "--json")
    assert event["detail"] == {"hosts": 1, "services": 0, "findings": 0}
    assert cli.json("events", "verify", "--json")["ok"] is True
