"""The runner of documentation shell blocks: what it runs, skips, reports and cleans up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.docs import shellblocks


def write(tmp_path: Path, text: str) -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(text, encoding="utf-8")
    return doc


def run(doc: Path, timeout: float = 60) -> shellblocks.Outcome:
    with shellblocks.workdir() as workdir:
        return shellblocks.run(doc, workdir, timeout=timeout)


def test_blocks_share_one_shell_and_the_failing_one_is_named(tmp_path: Path) -> None:
    doc = write(tmp_path, "\n".join([
        "# Title", "", "```sh", "mkdir sub && cd sub", "NAME=value", "```", "",
        "```python", "this is not run", "```", "",
        "```sh", 'test "$NAME" = value && test "$(basename "$PWD")" = sub',
        "echo reached second", "false  # ends here", "echo never", "```", "",
        "```sh", "echo third", "```", ""]))
    outcome = run(doc)
    assert outcome.failed is not None and outcome.failed.line == 12
    assert "reached second" in outcome.output and "never" not in outcome.output
    assert "third" not in outcome.output
    message = shellblocks.failure_message(doc, outcome)
    assert message.startswith("doc.md:12: the block starting `test \"$NAME\" = value")
    assert "### command failed (exit 1): false" in message


def test_a_pipeline_fails_on_its_first_command_and_unset_variables_fail(tmp_path: Path) -> None:
    assert run(write(tmp_path, "```sh\nfalse | cat\n```\n")).failed is not None
    assert run(write(tmp_path, "```sh\necho \"$UNDEFINED_ANYWHERE\"\n```\n")).failed is not None


def test_a_document_that_runs_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_HOME", "/somewhere/else")
    doc = write(tmp_path, "\n".join([
        "<!-- readme: skip — needs a cluster of three hosts -->", "```sh", "exit 3", "```",
        "", "   ```bash", '   test -z "${IOTSEC_HOME:-}"', '   case "$HOME" in "$PWD"/*|'
        '*/home) ;; *) exit 4;; esac', "   ```", ""]))
    outcome = run(doc)
    assert outcome.failed is None, outcome.output
    first, second = shellblocks.shell_blocks(doc)
    assert first.skip_reason == "needs a cluster of three hosts"
    assert second.skip_reason is None and second.language == "bash"


@pytest.mark.parametrize("directive", [
    "<!-- readme: skip -->", "<!-- readme: skip — -->", "<!-- readme: run twice -->"])
def test_a_malformed_directive_is_refused(tmp_path: Path, directive: str) -> None:
    with pytest.raises(ValueError, match=r"doc\.md:1"):
        shellblocks.shell_blocks(write(tmp_path, f"{directive}\n```sh\ntrue\n```\n"))


def test_a_directive_away_from_a_fence_or_an_open_fence_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="just before"):
        shellblocks.shell_blocks(
            write(tmp_path, "<!-- readme: skip — far away -->\n\n```sh\n```\n"))
    with pytest.raises(ValueError, match="never closed"):
        shellblocks.shell_blocks(write(tmp_path, "```sh\ntrue\n"))


def test_servers_left_running_are_stopped(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    doc = write(tmp_path, "\n".join([
        "```sh",
        "sleep 300 & echo $! > " + str(pids),
        # A daemon leaves the session, as 'mosquitto -d' does; its environment gives it away.
        "setsid sleep 301 & echo $! >> " + str(pids),
        "```", ""]))
    assert run(doc).failed is None
    for pid in map(int, pids.read_text().split()):
        assert not _running(pid), pid


def test_a_block_that_hangs_is_stopped_and_named(tmp_path: Path) -> None:
    doc = write(tmp_path, "```sh\necho start\n```\n\n```sh\nsleep 60\n```\n")
    started = time.monotonic()
    outcome = run(doc, timeout=2)
    assert time.monotonic() - started < 30
    assert outcome.timed_out and outcome.failed is not None and outcome.failed.line == 5
    assert "timed out" in shellblocks.failure_message(doc, outcome)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and os.path.exists(f"/proc/{pid}")
