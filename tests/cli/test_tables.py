"""Tables for people: identifiers never wrapped or cut, plain columns when stdout is not a
terminal, counts with the right plural."""

from __future__ import annotations

import io
import os
import sys

import pytest
from rich.console import Console

from iotsec.cli import output
from iotsec.cli.output import plural, table

SERIAL = "7f3a9c2e41d05b8896aa0c1e2f3d4b5a6c7d8e9f"
DEVICE = "sensor-floor-03-north-wing-0042"


def test_plural() -> None:
    assert plural(0, "device") == "0 devices"
    assert plural(1, "device") == "1 device"
    assert plural(2, "address", "addresses") == "2 addresses"


def test_identifiers_stay_whole_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=buf, force_terminal=True, width=50,
                                                   color_system=None))
    table(plural(1, "certificate"), ["serial", "device", "status", "reason"],
          [(SERIAL, DEVICE, "revoked", "the key was found on a public server " * 3)])
    text = buf.getvalue()
    assert "1 certificate" in text
    assert SERIAL in text and DEVICE in text  # on one line each, never folded or cut
    assert "…" not in text


def test_plain_columns_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(output, "console", Console(file=io.StringIO(), force_terminal=False))
    table("2 devices", ["id", "state", "attributes"],
          [("d1", "active", "floor=3\nwing=north"), (DEVICE, "disabled", None)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 devices"
    assert lines[1].split() == ["id", "state", "attributes"]
    assert lines[2].split() == ["d1", "active", "floor=3", "wing=north"]
    assert lines[3].split() == [DEVICE, "disabled"]
    # Columns line up, and nothing a terminal would draw is there.
    assert lines[2].index("active") == lines[3].index("disabled") == lines[1].index("state")
    assert not any(ch in "".join(lines) for ch in "│┃━─\x1b")


@pytest.mark.parametrize("env", [{}, {"TTY_COMPATIBLE": "0"}, {"TTY_COMPATIBLE": "1"},
                                 {"FORCE_COLOR": ""}, {"FORCE_COLOR": "1"},
                                 {"TTY_COMPATIBLE": "2", "FORCE_COLOR": "0"}])
@pytest.mark.parametrize("stream", ["terminal", "pipe", "closed", "none"])
def test_a_console_not_made_yet_knows_a_terminal_as_rich_does(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], stream: str) -> None:
    # The plain/Rich choice of table() is made without Rich: it must be Rich's own.
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    primary, secondary = os.openpty()
    files = {"terminal": os.fdopen(secondary, "w"), "pipe": io.StringIO(),
             "closed": io.StringIO(), "none": None}
    files["closed"].close()  # type: ignore[union-attr]
    try:
        for stderr in (False, True):
            monkeypatch.setattr(sys, "stderr" if stderr else "stdout", files[stream])
            ours = output._OnFirstUse(stderr=stderr, highlight=False)
            assert ours.is_terminal is Console(stderr=stderr, highlight=False).is_terminal
            assert ours._console is None  # decided without making the console
    finally:
        os.close(primary)
        files["terminal"].close()  # type: ignore[union-attr]
