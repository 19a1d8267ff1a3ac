"""Run a Markdown document's shell blocks the way a reader pastes them.

Every fenced block whose info string is ``sh`` (or ``bash``/``shell``) is a command block.
The blocks of one document run in order in ONE ``bash -euo pipefail`` process, so variables,
``export`` and ``cd`` carry from block to block as in one terminal, in a fresh directory,
with ``HOME`` and ``TMPDIR`` inside it and no ``IOTSEC_*`` setting inherited. A block that
needs something outside one machine is marked on the line just before its fence::

    <!-- readme: skip — needs an EMQX cluster -->

and is not run; the reason is required.

Servers a block starts and the document forgets to stop must not outlive the run: bash
runs in a session of its own, and every process still carrying the run's marker variable
in its environment (daemons like ``mosquitto -d`` leave the session, not the environment)
is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import unavailable

REPO = Path(__file__).resolve().parents[2]
#: Info strings of the blocks that are run as shell commands.
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<info>[^\s`]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*readme:\s*(?P<body>.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip\s*(?:—|–|-{1,2}|:)\s*(?P<reason>.*)$")
#: The environment variable that marks every process a run starts.
MARKER = "DOCTEST_RUN_MARKER"
_TAIL_LINES = 40
_FAILED = "### command failed"


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and why it is skipped."""

    line: int  # 1-based line number of the opening fence
    language: str
    code: str
    skip_reason: str | None  # None: run it

    @property
    def first_line(self) -> str:
        """The block's first non-blank line, to name it in a failure."""
        return next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file ``path`` in order, with its skip marker.

    A ``<!-- readme: ... -->`` directive other than a skip, a skip without a reason, or a
    fence left open raise :class:`ValueError`: a typo must not silently run or skip a block.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i])
        if directive is not None:
            _parse_skip(directive.group("body"), path, i + 1)
            if i + 1 == len(lines) or _FENCE.match(lines[i + 1]) is None:
                raise ValueError(f"{path.name}:{i + 1}: a readme directive belongs on the "
                                 "line just before a block's opening fence")
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            text = lines[j]
            body.append(text[len(indent):] if text.startswith(indent) else text.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{path.name}:{i + 1}: the block opened here is never closed")
        previous = _DIRECTIVE.match(lines[i - 1]) if i > 0 else None
        reason = _parse_skip(previous.group("body"), path, i) if previous else None
        found.append(Block(line=i + 1, language=opening.group("info").lower(),
                           code="\n".join(body) + "\n", skip_reason=reason))
        i = j + 1
    return found


def _parse_skip(body: str, path: Path, line: int) -> str:
    skip = _SKIP.match(body)
    if skip is None:
        raise ValueError(f"{path.name}:{line}: unknown directive <!-- readme: {body} -->; "
                         "the only one is <!-- readme: skip — REASON -->")
    reason = skip.group("reason").strip()
    if not reason:
        raise ValueError(f"{path.name}:{line}: a skipped block must say what outside thing "
                         "it needs: <!-- readme: skip — REASON -->")
    return reason


def shell_blocks(path: Path) -> list[Block]:
    """The command blocks of ``path`` (run or skipped), in order."""
    return [b for b in blocks(path) if b.language in SHELL_LANGUAGES]


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the block that failed (None: all passed) and the output."""

    failed: Block | None
    returncode: int
    output: str
    timed_out: bool


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh directory for one run, removed afterwards: short and directly under /tmp,
    mode 0711, because a broker a block starts drops to its own account (which must reach
    its files) and listens on a Unix socket in it (whose path must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="iotsec-doc-", dir="/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def search_path() -> str:
    """The PATH the blocks run with: the virtualenv's ``bin`` (where ``iotsec`` and
    ``imgtool`` are) first, as the README asks its reader to set it."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def tools_used(runnable: list[Block], tools: dict[str, str]) -> None:
    """Check that each tool of ``tools`` (name -> how to install it) that the blocks call
    is on the blocks' PATH; a missing one skips the test, or fails it under CI."""
    text = "\n".join(b.code for b in runnable)
    for name, install in tools.items():
        called = re.search(rf"(?<![\w./-]){re.escape(name)}(?![\w.-])", text)
        if called and shutil.which(name, path=search_path()) is None:
            unavailable(f"{name} is not installed ({install})")


def run(path: Path, workdir: Path, *, timeout: float) -> Outcome:
    """Run the command blocks of ``path`` that are not skipped, in order, in ONE bash
    process started in ``workdir``; the first failing block ends the run."""
    runnable = [b for b in shell_blocks(path) if b.skip_reason is None]
    state = workdir / ".doctest-block"
    log = workdir / ".doctest-output"
    # The ERR trap names the command that ended the run (set -e alone says nothing).
    script = ["set -euo pipefail",
              f"trap 'echo \"{_FAILED} (exit $?): $BASH_COMMAND\"' ERR"]
    for index, block in enumerate(runnable):
        script.append(f"echo {index} > {_quote(state)}")
        script.append(f"echo {_quote(f'### {path.name}:{block.line}: {block.first_line}')}")
        script.append(block.code)
    script.append(f"echo done > {_quote(state)}")
    (workdir / ".doctest-script.sh").write_text("\n".join(script) + "\n", encoding="utf-8")
    home = workdir / "home"
    tmp = workdir / "tmp"
    run_dir = workdir / "run"
    for directory in (home, tmp, run_dir):
        directory.mkdir()
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IOTSEC_") and k != "SOFTHSM2_CONF"}
    env.update(HOME=str(home), TMPDIR=str(tmp), LC_ALL="C.UTF-8",
               PATH=search_path())
    env[MARKER] = marker
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", str(workdir / ".doctest-script.sh")],
            cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = -1
        finally:
            stop_leftovers(process, marker)
    reached = state.read_text(encoding="utf-8").strip() if state.exists() else "0"
    output = log.read_text(encoding="utf-8", errors="replace")
    failed = None if reached == "done" and returncode == 0 else runnable[int(reached)]
    return Outcome(failed=failed, returncode=returncode, output=output, timed_out=timed_out)


def failure_message(path: Path, outcome: Outcome) -> str:
    """What a reader of a failed test needs: which block, where, and how it ended."""
    block = outcome.failed
    assert block is not None
    how = "timed out" if outcome.timed_out else f"exited {outcome.returncode}"
    start = outcome.output.rfind(f"### {path.name}:{block.line}:")
    tail = outcome.output[max(start, 0):].splitlines()[-_TAIL_LINES:]
    failed = [ln for ln in tail if ln.startswith(_FAILED)]
    culprit = f"\n{failed[-1]}" if failed else ""
    return (f"{path.name}:{block.line}: the block starting `{block.first_line}` {how}"
            f"{culprit}\nthe end of its output:\n" + "\n".join(tail))


def stop_leftovers(process: subprocess.Popen[bytes], marker: str) -> None:
    """End what a run left behind: the session of ``process`` (bash, its session leader),
    then any process carrying ``marker`` in its environment (a daemon such as
    ``mosquitto -d`` leaves the session but keeps its environment)."""
    session = process.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session, sig)
        for pid in _marked(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            process.poll()  # reap bash, so that a finished session stops counting
            if not _session_alive(session) and not _marked(marker):
                return
            time.sleep(0.1)
    process.wait()


def _session_alive(session: int) -> bool:
    try:
        os.killpg(session, 0)
    except ProcessLookupError:
        return False
    return True


def _marked(marker: str) -> list[int]:
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _quote(text: object) -> str:
    return "'" + str(text).replace("'", "'\\''") + "'"
