"""A refused command changes nothing.

Every command of the Typer tree (enumerated from :data:`iotsec.cli.root.app`, so a new
command cannot be forgotten) is either listed in :data:`READ_ONLY` or given a refused
invocation in :data:`REFUSALS`: a bad argument, a missing object or a conflict. Each
refusal runs against one initialised home, inside a directory that also holds the inputs
and receives any output; the test snapshots that directory (every file with a hash of its
content) and every table of the store before and after, and asserts they are equal.

The one thing a refusal may add is its own record in the audit trail: a security event
whose outcome says it was refused (``failure``, ``denied``, ``refused``). Recording that a
request was refused is the point of an audit trail, not a change of state.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from sqlalchemy import MetaData, create_engine, select

from iotsec.cli.main import main
from iotsec.cli.root import app
from iotsec.store import models as m
from tests.cli.support import Cli, use_home
from tests.helpers import make_csr

#: Outcomes of the events a refusal may record (see the module documentation).
REFUSAL_OUTCOMES = frozenset({"failure", "denied", "refused"})
SERIAL = "0123456789ABCDEF0123"
SQLITE_FILES = ("iotsec.db", "iotsec.db-wal", "iotsec.db-shm", "iotsec.db-journal",
                "iotsec.db-writers")

#: Commands that never write: to the store, the home or a file.
READ_ONLY = frozenset({
    "alerts list", "alerts show", "authz check", "ca bundle", "ca chain", "ca list",
    "coap edhoc credential", "coap edhoc kid",
    "cert list", "cert show",
    "compliance attestations",
    "compliance frameworks", "data inspect", "detect rules show", "detect rules validate",
    "detect status", "device list", "device show",
    "device-token key list", "enrol claim-ca list", "enrol secret list",
    "enrol template list", "enrol template show", "events list", "events verify",
    "firmware inspect", "incident list", "incident show",
    "firmware verify",
    "keys list", "keys report", "netseg check", "netseg services", "netseg validate",
    "profile list", "profile show", "ota campaign devices", "ota campaign list",
    "ota campaign status", "ota release list",
    "ota repo status", "payload inspect", "payload pair", "policy lint", "role list",
    "role show", "token list",
})

#: One refused invocation of each command that writes. ``{w}`` is the work directory
#: (inputs: ``garbage``, ``good.csr``, ``devices.csv``, ``policy.yaml``, ``exists``).
REFUSALS: dict[str, list[str]] = {
    "alerts ack": ["alerts", "ack", "4242"],
    "alerts check": ["alerts", "check", "--nonsense"],
    "alerts deliver": ["alerts", "deliver", "--nonsense"],
    "detect rules apply": ["detect", "rules", "apply", "{w}/garbage"],
    "detect run": ["detect", "run", "--once", "--log", "{w}/garbage", "--nonsense"],
    "alerts resolve": ["alerts", "resolve", "4242"],
    "audit": ["audit", "--fail-on", "nonsense"],
    "ca import": ["ca", "import", "{w}/garbage"],
    "ca import-crl": ["ca", "import-crl", "{w}/garbage"],
    "ca request": ["ca", "request", "--key-type", "dsa"],
    "ca retire": ["ca", "retire", "4242"],
    "ca rotate": ["ca", "rotate", "--key-type", "dsa"],
    "ca sign-crl": ["ca", "sign-crl", "--root-cert", "{w}/garbage", "--root-key",
                    "{w}/garbage"],
    "ca sign-intermediate": ["ca", "sign-intermediate", "{w}/garbage", "--root-cert",
                             "{w}/garbage", "--root-key", "{w}/garbage"],
    "backup create": ["backup", "create", "{w}/garbage"],
    "backup restore": ["backup", "restore", "{w}/garbage"],
    "broker emqx render": ["broker", "emqx", "render", "-o", "{w}/emqx", "--port", "70000"],
    "broker mosquitto ingest-log": ["broker", "mosquitto", "ingest-log", "{w}/no-broker"],
    "broker mosquitto render": ["broker", "mosquitto", "render", "-o", "{w}/mq",
                                "--port", "70000"],
    "broker mosquitto sync": ["broker", "mosquitto", "sync", "{w}/no-broker"],
    "cert import": ["cert", "import", "{w}/garbage"],
    "cert issue": ["cert", "issue", "dev-1", "--csr", "{w}/garbage"],
    "cert renew": ["cert", "renew", SERIAL, "--csr", "{w}/good.csr"],
    "cert revoke": ["cert", "revoke", SERIAL],
    "compliance attest": ["compliance", "attest", "no-such-provision", "-f",
                          "etsi-en-303-645", "--status", "pass", "--note", "n"],
    "compliance report": ["compliance", "report", "-f", "no-such-framework"],
    "crl": ["crl", "--ca", "nonsense"],
    "data decrypt": ["data", "decrypt", "{w}/garbage", "{w}/plain"],
    "data encrypt": ["data", "encrypt", "{w}/missing", "{w}/sealed"],
    "data rewrap": ["data", "rewrap", "{w}/garbage"],
    "device add": ["device", "add", "dev-1"],
    "device approve": ["device", "approve", "dev-1"],
    "device assign": ["device", "assign", "dev-1", "--role", "no-such-role"],
    "device disable": ["device", "disable", "ghost"],
    "device enable": ["device", "enable", "ghost"],
    "device import": ["device", "import", "{w}/devices.csv"],
    "device set-profile": ["device", "set-profile", "dev-1", "no-such-profile"],
    "device retire": ["device", "retire", "ghost"],
    "device-token key add": ["device-token", "key", "add", "dev-1", "--public-key",
                             "{w}/garbage"],
    "device-token key revoke": ["device-token", "key", "revoke", "no-such-kid"],
    "device-token secret create": ["device-token", "secret", "create", "ghost"],
    "device-token secret rotate": ["device-token", "secret", "rotate", "dev-1"],
    "device-token verify": ["device-token", "verify", "not.a.token"],
    "device-agent": ["device-agent", "--dir", "{w}/agent", "--server", "http://127.0.0.1:1",
                     "--ca", "{w}/garbage"],
    "enrol claim-ca add": ["enrol", "claim-ca", "add", "m", "--ca", "{w}/garbage",
                           "--template", "t"],
    "enrol claim-ca remove": ["enrol", "claim-ca", "remove", "no-such-ca"],
    "enrol secret create": ["enrol", "secret", "create", "ghost"],
    "enrol secret revoke": ["enrol", "secret", "revoke", "es_aaaaaaaaaaaaaaaa"],
    "enrol template add": ["enrol", "template", "add", "t", "--role", "no-such-role"],
    "enrol template remove": ["enrol", "template", "remove", "no-such-template"],
    "events checkpoint": ["events", "checkpoint", "--nonsense"],
    "events export": ["events", "export", "--format", "nonsense", "-o", "{w}/events.out"],
    "incident timeline": ["incident", "timeline", "ghost", "--html", "{w}/timeline.html"],
    "incident quarantine": ["incident", "quarantine", "ghost", "--reason", "test"],
    "incident release": ["incident", "release", "ghost"],
    "firmware import-key": ["firmware", "import-key", "{w}/garbage", "-o", "{w}/fw.key"],
    "firmware keygen": ["firmware", "keygen", "--label", "fw", "-t", "dsa"],
    "firmware public-key": ["firmware", "public-key", "--label", "nope", "-o", "{w}/pub"],
    "firmware publish": ["firmware", "publish", "{w}/garbage", "--product", "p",
                         "--hardware", "h"],
    "firmware sign": ["firmware", "sign", "{w}/missing", "{w}/signed", "-v", "1.0.0",
                      "--key-label", "nope"],
    "group set-profile": ["group", "set-profile", "no-such-group", "device"],
    "group add": ["group", "add", "g1", "--role", "no-such-role"],
    "init": ["init", "--keystore", "pkcs11", "--pkcs11-module", "{w}/libpkcs11.so",
             "--token-label", "iotsec"],
    "keys export-public": ["keys", "export-public", "nope", "-o", "{w}/pub"],
    "keys generate": ["keys", "generate", "ca-next", "--type", "dsa"],
    "keys reinstate": ["keys", "reinstate", "file:nope"],
    "keys retire": ["keys", "retire", "file:nope"],
    "keys rotate": ["keys", "rotate", "nonsense"],
    "migrate": ["migrate", "--to", "mysql://nowhere.invalid/iotsec"],
    "netseg compile": ["netseg", "compile", "{w}/missing", "-o", "{w}/rules.nft"],
    "ocsp check": ["ocsp", "check", "not-a-serial"],
    "ota campaign abort": ["ota", "campaign", "abort", "9999"],
    "ota campaign create": ["ota", "campaign", "create", "--name", "c", "--product", "p"],
    "ota campaign pause": ["ota", "campaign", "pause", "9999"],
    "ota campaign resume": ["ota", "campaign", "resume", "9999"],
    "ota campaign tick": ["ota", "campaign", "tick", "--nonsense"],
    "ota key generate": ["ota", "key", "generate", "-o", "{w}/exists",
                         "--public-out", "{w}/ota.pub"],
    "ota metadata import": ["ota", "metadata", "import", "{w}/garbage"],
    "ota metadata sign": ["ota", "metadata", "sign", "{w}/garbage", "-k", "{w}/garbage"],
    "ota repo init": ["ota", "repo", "init", "--root-threshold", "0"],
    "ota repo refresh": ["ota", "repo", "refresh"],
    "ota repo rotate": ["ota", "repo", "rotate", "--online"],
    "payload keygen": ["payload", "keygen", "{w}/p.key", "{w}/p.pub", "--type", "rsa"],
    "payload open": ["payload", "open", "{w}/garbage", "{w}/opened", "--sender-pub",
                     "{w}/garbage", "--sender-id", "a"],
    "payload seal": ["payload", "seal", "{w}/missing", "{w}/sealed", "--sender-key",
                     "{w}/garbage", "--sender-id", "a"],
    "policy apply": ["policy", "apply", "{w}/policy.yaml"],
    "policy export": ["policy", "export", "-o", "{w}"],
    "profile add": ["profile", "add", "p1", "--days", "0"],
    "profile remove": ["profile", "remove", "no-such-profile"],
    "role add": ["role", "add", "device", "--allow", "publish:x/#"],
    "scan": ["scan", "not a host!"],
    "serve": ["serve", "--port", "70000"],
    "gateway coap": ["gateway", "coap", "--port", "0", "--mqtt-port", "1"],
    "coap oscore context": ["coap", "oscore", "context", "dev-1", "--device-public",
                            "{w}/garbage"],
    "coap oscore remove": ["coap", "oscore", "remove", "ghost"],
    "token create": ["token", "create", "not a name!"],
    "token revoke": ["token", "revoke", "{admin}"],
}

#: Environment a refusal runs with (the init case: a complete token configuration, so
#: that the refusal is the existing home and nothing else).
_BACKUP = {"IOTSEC_BACKUP_PASSPHRASE": "a passphrase long enough for a backup"}
ENVIRONMENT: dict[str, dict[str, str]] = {"init": {"IOTSEC_PKCS11_PIN": "1234"},
                                          "backup create": _BACKUP, "backup restore": _BACKUP}


def _commands() -> list[str]:
    found: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        if not hasattr(command, "list_commands"):
            found.append(" ".join(path))
            return
        # Through the click API: the root loads its command groups only when asked.
        ctx = command.context_class(command)
        for name in sorted(command.list_commands(ctx)):
            walk(command.get_command(ctx, name), [*path, name])

    walk(typer.main.get_command(app), [])
    assert len(found) > 50, found
    return found


@dataclass(frozen=True)
class Home:
    root: Path
    home: Path
    work: Path
    admin: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """One initialised home with a device and its certificate, and the inputs."""
    root = tmp_path_factory.mktemp("refusals")
    with pytest.MonkeyPatch.context() as patch:
        home = use_home(patch, root / "home")
        work = root / "work"
        work.mkdir()
        (work / "garbage").write_bytes(b"this is nothing iotsec can read\n")
        (work / "good.csr").write_bytes(make_csr())
        (work / "exists").write_text("an existing file\n")
        (work / "libpkcs11.so").write_bytes(b"")
        # The second row is invalid: the whole import must be refused, the first row too.
        (work / "devices.csv").write_text("id,groups\ndev-2,\nnot a valid id!,\n")
        (work / "policy.yaml").write_text("roles:\n  - name: x\n    rules: [{bad: 1}]\n")
        assert main(["device", "add", "dev-1"]) == 0
        assert main(["cert", "issue", "dev-1", "--csr", str(work / "good.csr"),
                     "-o", str(work / "dev-1.crt")]) == 0
        engine = create_engine(f"sqlite:///{home / 'iotsec.db'}")
        with engine.connect() as conn:
            (admin,) = conn.execute(select(m.api_tokens.c.id)).scalars().all()
        engine.dispose()
        yield Home(root, home, work, admin)


def _files(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            rel = str(path.relative_to(root))
            if path.parent.name == "home" and name in SQLITE_FILES:
                continue  # the store is compared table by table below
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_socket():
                out[rel] = "socket"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        for name in _dirs:
            out[str((Path(directory) / name).relative_to(root)) + "/"] = "dir"
    return out


def _tables(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(f"sqlite:///{home / 'iotsec.db'}")
    try:
        reflected = MetaData()
        reflected.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr)
                    for name, table in reflected.tables.items()}
    finally:
        engine.dispose()


def _snapshot(world: Home) -> tuple[dict[str, str], dict[str, list[tuple[Any, ...]]]]:
    return _files(world.root), _tables(world.home)


def test_every_command_is_classified() -> None:
    commands = set(_commands())
    assert not READ_ONLY & set(REFUSALS)
    assert sorted(commands - READ_ONLY - set(REFUSALS)) == []
    assert sorted((READ_ONLY | set(REFUSALS)) - commands) == []


@pytest.mark.parametrize("command", sorted(REFUSALS))
def test_a_refused_command_changes_nothing(command: str, world: Home,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    args = [a.format(w=world.work, admin=world.admin) for a in REFUSALS[command]]
    for name, value in ENVIRONMENT.get(command, {}).items():
        monkeypatch.setenv(name, value)
    files, tables = _snapshot(world)
    result = Cli(capsys)(*args)
    assert result.code in (1, 2), (args, result)
    assert "Traceback" not in result.out + result.err and "internal error" not in result.err
    after_files, after_tables = _snapshot(world)
    changed = sorted(k for k in files.keys() | after_files.keys()
                     if files.get(k) != after_files.get(k))
    assert changed == [], result.err
    events = m.events.name
    added = [row for row in after_tables.pop(events) if row not in tables[events]]
    before_events = tables.pop(events)
    assert [t for t in tables if after_tables[t] != tables[t]] == [], result.err
    assert len(before_events) + len(added) == len(_tables(world.home)[events])
    outcome = [c.name for c in m.events.columns].index("outcome")
    assert [row for row in added if row[outcome] not in REFUSAL_OUTCOMES] == [], result.err


def test_a_refused_init_leaves_a_home_that_works(world: Home,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_PKCS11_PIN", "1234")
    cli = Cli(capsys)
    cli.refused(*[a.format(w=world.work) for a in REFUSALS["init"]])
    monkeypatch.delenv("IOTSEC_PKCS11_PIN")
    assert [d["id"] for d in cli.json("device", "list")] == ["dev-1"]
    assert cli("crl", "-o", str(world.work / "crl.der")).code == 0
    (world.work / "crl.der").unlink()


def test_init_without_a_passphrase_choice_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        database_url: str | None) -> None:
    """``iotsec init`` with neither IOTSEC_CA_PASSPHRASE nor --store-passphrase is refused
    before anything exists: no home directory, no table in the store."""
    home = tmp_path / "fresh"
    monkeypatch.setenv("IOTSEC_HOME", str(home))
    monkeypatch.delenv("IOTSEC_CA_PASSPHRASE", raising=False)
    if database_url is not None:
        monkeypatch.setenv("IOTSEC_DATABASE_URL", database_url)
    message = Cli(capsys).refused("init")
    assert "--store-passphrase" in message
    assert not home.exists() and list(tmp_path.iterdir()) == []
    if database_url is not None:
        engine = create_engine(database_url)
        try:
            reflected = MetaData()
            reflected.reflect(engine)
            assert list(reflected.tables) == []
        finally:
            engine.dispose()
