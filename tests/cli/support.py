"""Helpers shared by the command-line tests: run ``iotsec`` in-process and check results."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer

from iotsec.app.setup import init_home
from iotsec.cli import lean as lean_module
from iotsec.cli import main as cli_main
from iotsec.cli.lean import run as lean_run
from iotsec.cli.main import main
from iotsec.cli.spec import CommandSpec, parse
from iotsec.config import Settings

#: The lean path's runner, as the tests found it (some replace it).
_LEAN_RUN = lean_run
TOKEN = re.compile(r"iotsec_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
CONSOLE_SCRIPT = Path(sys.executable).with_name("iotsec")

_T = TypeVar("_T")


def on_postgresql(test: Callable[..., None]) -> Callable[..., None]:
    """Marks a test of a home whose store is PostgreSQL (with the ``postgres_ready``
    fixture): ``database_url`` is a private schema of the test server, and the test is
    skipped where no server answers."""
    marked: Callable[..., None] = pytest.mark.postgres(pytest.mark.parametrize(
        "database_url", ["postgresql"], indirect=True)(test))
    return marked


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs ``iotsec ARGS`` in this process, capturing what it prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> Result:
        self._capsys.readouterr()
        code = main(list(args))
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.code == 0, (args, result)
        assert "Traceback" not in result.out + result.err
        return result

    def json(self, *args: str) -> Any:
        return self.ok(*args, "--json").json()

    def refused(self, *args: str) -> str:
        """Assert ``iotsec ARGS`` is refused: exit 1, one 'iotsec: error:' line on stderr."""
        result = self(*args)
        assert_refused(result)
        return result.err.strip()

    def store(self) -> tuple[Any, Any]:
        """What the store holds, as the CLI shows it."""
        return (self.json("device", "list", "--limit", "10000"),
                self.json("cert", "list", "--limit", "100000"))


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path, *, initialise: bool = True) -> Path:
    """Select ``home`` through IOTSEC_HOME, with no other IOTSEC_ setting inherited from the
    environment, and work in the directory around it; ``initialise`` creates it first."""
    for name in [n for n in os.environ if n.startswith("IOTSEC_")]:
        monkeypatch.delenv(name)
    if initialise:
        init_home(Settings(home=home), store_passphrase=True)
    monkeypatch.setenv("IOTSEC_HOME", str(home))
    monkeypatch.chdir(home.parent)
    return home


def mount(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes],
          **groups: typer.Typer) -> Callable[..., Result]:
    """``run(*args, stdin=b"...")``: ``iotsec ARGS`` with only ``groups`` (name=app)
    mounted, run through iotsec's real error mapping (``iotsec.cli.main.main``)."""
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                       rich_markup_mode=None)
    for name, group in groups.items():
        root.add_typer(group, name=name)

    @root.callback()
    def _root() -> None:
        """iotsec (test mount)."""

    monkeypatch.setattr(cli_main, "app", root)

    def invoke(*args: str, stdin: bytes = b"") -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsysbinary.readouterr()
        code = cli_main.main(list(args))
        out, err = capsysbinary.readouterr()
        # surrogateescape keeps binary output recoverable: result.out.encode(same).
        return Result(code, out.decode("utf-8", "surrogateescape"),
                      err.decode("utf-8", "replace"))

    return invoke


def typer_command(path: tuple[str, ...]) -> Any:
    """The click command the Typer app runs for ``iotsec PATH...`` (a group's command)."""
    # Deferred: most command-line tests never look at the root app.
    import typer.main

    from iotsec.cli.root import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root)
    group = root.get_command(ctx, path[0])  # type: ignore[attr-defined]
    return group.get_command(ctx, path[1])


def assert_spec_is_the_interface(spec: CommandSpec) -> None:
    """The Typer command of ``spec.path`` declares exactly ``spec``'s arguments, valued
    options (with their defaults) and flags, each option under one name, taking one value."""
    command = typer_command(spec.path)
    arguments = [p.name for p in command.params if p.param_type_name == "argument"]
    assert tuple(arguments) == spec.arguments
    options = [p for p in command.params if p.param_type_name == "option"]
    flags = {(p.opts[0], p.name) for p in options if p.is_flag}
    valued = {(p.opts[0], p.name, p.default) for p in options if not p.is_flag}
    assert flags == set(spec.flags) and valued == set(spec.options)
    for p in options:
        assert len(p.opts) == 1 and not p.secondary_opts and not p.multiple, p.name
        assert p.is_flag or p.nargs == 1, p.name


def assert_parse_reads_what_click_reads(spec: CommandSpec, lines: tuple[tuple[str, ...], ...]
                                        ) -> int:
    """Every line of ``lines`` that :func:`iotsec.cli.spec.parse` reads, it reads with the
    values click gives the Typer command; returns how many it read (the rest it leaves to
    Typer)."""
    from typer._click.exceptions import ClickException
    from typer.exceptions import Exit

    command = typer_command(spec.path)
    understood = 0
    for line in lines:
        ours = parse(spec, line)
        try:
            theirs: dict[str, Any] | None = command.make_context(spec.path[-1],
                                                                 list(line)).params
        except (ClickException, Exit):
            theirs = None
        if ours is not None:
            understood += 1
            assert ours == theirs, line
    return understood


#: Files that make a home one the commands run before Typer leave to the runtime: a store
#: in another database, keys in a token, a key-store record that cannot be read.
OTHER_HOME_FILES: tuple[tuple[str, str], ...] = (
    ("database.json", '{"database_url": "postgresql+psycopg://x/y"}'),
    ("keystore.json", '{"keystore": "pkcs11", "pkcs11_module": null, "pkcs11_token": null}'),
    ("keystore.json", '{"keystore": "file", "pkcs11_module": "/m.so", "pkcs11_token": null}'),
    ("keystore.json", "not json"),
)


@contextmanager
def home_file(home: Path, name: str, content: str) -> Iterator[None]:
    """``home / name`` holding ``content`` for the block, then as it was (or absent)."""
    path = home / name
    kept = path.read_bytes() if path.exists() else None
    path.write_text(content)
    try:
        yield
    finally:
        if kept is None:
            path.unlink()
        else:
            path.write_bytes(kept)


def count_lean_runs(monkeypatch: pytest.MonkeyPatch) -> list[int | str | None]:
    """From now on, what :func:`iotsec.cli.lean.run` returns for each command: an exit
    code, None when it left the command to Typer, "raised" for an error."""
    from iotsec.cli import lean

    calls: list[int | str | None] = []
    real = _LEAN_RUN

    def counted(args: list[str]) -> int | None:
        try:
            result = real(args)
        except BaseException:
            calls.append("raised")
            raise
        calls.append(result)
        return result

    monkeypatch.setattr(lean, "run", counted)
    return calls


def lean_and_typer_agree(monkeypatch: pytest.MonkeyPatch, ask: Callable[[], list[_T]],
                         count: int) -> list[_T]:
    """What ``ask`` (``count`` command lines) gets before Typer, each line run there, and
    through Typer, which must be the same."""
    calls = count_lean_runs(monkeypatch)
    by_lean = ask()
    # Every one was answered (or refused) before Typer.
    assert len(calls) == count and None not in calls, calls
    monkeypatch.setattr(lean_module, "run", lambda args: None)
    by_typer = ask()
    assert by_lean == by_typer
    return by_lean


def assert_refused(result: Result) -> None:
    assert result.code == 1, result
    assert "Traceback" not in result.out + result.err, result
    assert result.err.startswith("iotsec: error:"), result
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result
    assert "internal error" not in result.err, result


def run_script(*args: str, env: dict[str, str], cwd: Path | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``iotsec`` console script."""
    return subprocess.run([str(CONSOLE_SCRIPT), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)
