"""The root command loads a command group only when it is called: ``iotsec --version``
imports none of them, nor the store, and every command in the table is reachable."""

from __future__ import annotations

import json
import subprocess
import sys

import typer.main

from iotsec.cli.main import COMMANDS, app

PROBE = """
import json, sys
from iotsec.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(*args: str) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, timeout=120, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), done.stdout


def test_version_loads_no_command_and_no_store() -> None:
    code, modules, out = _run("--version")
    assert code == 0 and out.startswith("iotsec ")
    loaded = {m for m in modules if m.startswith("iotsec.cli.") and m != "iotsec.cli.main"}
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
    assert names == [name for name, _ in COMMANDS]
    for name in names:
        command = root.get_command(ctx, name)  # type: ignore[attr-defined]
        assert command is not None and command.name == name
        assert command.help, name


def test_an_unknown_command_is_a_usage_error() -> None:
    code, modules, _ = _run("no-such-command")
    assert code == 2
    assert "sqlalchemy" not in modules
