"""Run as the ``iotsec`` program, the process ends as soon as the command is done, without
tearing the interpreter down, and loses nothing: the whole output, the exit code, the
``atexit`` functions; while a thread Python would wait for still runs, it exits as usual."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.cli.support import Cli

#: The program as the console script runs it, with witnesses: an atexit function, and an
#: object that says so when the interpreter is torn down (its module's globals cleared).
PROGRAM = """
import atexit, sys, threading, time
atexit.register(lambda: print("atexit ran", file=sys.stderr))
class Witness:
    def __del__(self):
        print("torn down", file=sys.stderr)
witness = Witness()
if sys.argv[1] == "with-thread":
    threading.Thread(target=time.sleep, args=(0.5,)).start()
from iotsec.cli.main import main
sys.argv[1:2] = []
sys.exit(main())
"""


def _program(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_program_ends_at_once_with_its_output_and_exit_code(ready: dict[str, Any],
                                                                cli: Cli) -> None:
    cli.ok("device", "add", "dev-1")
    done = _program("plain", "device", "show", "dev-1", "--json")
    assert done.returncode == 0, done.stderr
    # The whole output (a pipe's buffer is flushed before the end), as in-process.
    assert done.stdout == cli.ok("device", "show", "dev-1", "--json").out
    assert "atexit ran" in done.stderr and "torn down" not in done.stderr
    refused = _program("plain", "device", "show", "no-such-device")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.splitlines()[0].startswith("iotsec: ")
    assert "torn down" not in refused.stderr


def test_a_running_thread_makes_the_program_exit_as_usual(ready: dict[str, Any]) -> None:
    done = _program("with-thread", "--version")
    assert done.returncode == 0 and done.stdout.startswith("iotsec ")
    assert "atexit ran" in done.stderr and "torn down" in done.stderr
