"""The suite's own set-up (tests/conftest.py): cheap key files in this process, and Typer
command trees reused only while the app they were built from is unchanged."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
import typer.main

from iotsec.cli.root import app as iotsec_app
from iotsec.pki import pkcs8
from tests import services
from tests.conftest import LONG_FIRST, TEST_SCRYPT_COST, pytest_collection_modifyitems


def test_key_files_written_here_use_the_test_cost() -> None:
    assert pkcs8.SCRYPT_COST == TEST_SCRYPT_COST
    assert pkcs8.DEFAULT_SCRYPT_COST != TEST_SCRYPT_COST


def test_production_scrypt_cost_fixture(production_scrypt_cost: pkcs8.ScryptCost) -> None:
    assert pkcs8.SCRYPT_COST == production_scrypt_cost == pkcs8.DEFAULT_SCRYPT_COST


def test_the_iotsec_command_tree_is_built_once() -> None:
    assert typer.main.get_command(iotsec_app) is typer.main.get_command(iotsec_app)


def test_a_command_registered_later_is_seen(capsys: pytest.CaptureFixture[str]) -> None:
    root = typer.Typer(add_completion=False)
    group = typer.Typer()
    root.add_typer(group, name="group")

    @root.command("hello")
    def hello(name: Annotated[str, typer.Argument()]) -> None:
        typer.echo(f"hello {name}")

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exited:
            root(args=list(args), prog_name="t")
        code = exited.value.code
        return code if isinstance(code, int) else 0

    assert run("hello", "a") == 0
    first = typer.main.get_command(root)
    assert run("group", "bye") == 2  # no such command yet

    @group.command("bye")
    def bye() -> None:
        typer.echo("bye")

    assert run("group", "bye") == 0
    assert typer.main.get_command(root) is not first
    assert capsys.readouterr().out.splitlines() == ["hello a", "bye"]


def test_a_missing_tool_skips_off_ci_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "iotsec-no-such-tool"
    monkeypatch.setattr(services, "UNDER_CI", False)
    with pytest.raises(pytest.skip.Exception, match=f"^{name} is not installed \\(apt\\)$"):
        services.require_tool(name, "apt")
    monkeypatch.setattr(services, "UNDER_CI", True)
    with pytest.raises(pytest.fail.Exception,
                       match=f"^required under CI: {name} is not installed$"):
        services.require_tool(name)
    assert services.require_tool("sh").endswith("/sh")


def test_the_long_tests_are_scheduled_first() -> None:
    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    names = ["tests/a/test_x.py::test_1", f"{LONG_FIRST[1]}[audit.md]", "tests/b.py::test_2",
             LONG_FIRST[0]]
    items = [Item(n) for n in names]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == [names[1], names[3], names[0], names[2]]
