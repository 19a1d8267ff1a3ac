"""``iotsec device-agent`` as the process a Linux device runs: it enrols with a secret read
from standard input or a file (never from its command line), renews, prints one JSON status
line per step, and exits 0 on SIGTERM or SIGINT."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import CONSOLE_SCRIPT, Result, assert_refused, run_script
from tests.enrol.sdk_support import operator, secret, template, usable_pair
from tests.security.serving import Served

TEMPLATE = "agent-sensors"


@pytest.fixture(scope="module")
def agent_secret(est_server: Served) -> tuple[str, str]:
    template(est_server, TEMPLATE, "--id-from", "csr-cn")
    return secret(est_server, template=TEMPLATE, uses=20)


def _device_env(server: Served) -> dict[str, str]:
    """A device's environment: no iotsec home (the agent needs none)."""
    return {k: v for k, v in server.env.items() if not k.startswith("IOTSEC_")}


def _args(server: Served, directory: Path, *extra: str) -> list[str]:
    return ["device-agent", "--dir", str(directory), "--server", server.est_url, "--ca",
            str(server.chain), "--json", *extra]


class Agent:
    """A running ``iotsec device-agent``; its status lines read as they come."""

    def __init__(self, args: list[str], env: dict[str, str], stdin: bytes) -> None:
        self.proc = subprocess.Popen([str(CONSOLE_SCRIPT), *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""

    def until(self, state: str, within: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + within
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                for line in self._take():
                    if line["state"] == state:
                        return line
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, (self.lines, self.stderr())
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    assert chunk, (self.lines, self.stderr())
                    self._buffer += chunk

    def _take(self) -> Iterator[dict[str, Any]]:
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.lines.append(json.loads(line))
            yield self.lines[-1]

    def stop(self, sig: int) -> int:
        os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout=20)
        assert self.proc.stdout is not None
        self._buffer += self.proc.stdout.read()
        list(self._take())
        return code

    def stderr(self) -> str:
        return self.proc.stderr.read().decode() if self.proc.stderr and \
            self.proc.poll() is not None else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_agent_enrols_runs_and_exits_cleanly(est_server: Served,
                                                 agent_secret: tuple[str, str],
                                                 tmp_path: Path, sig: int) -> None:
    device = tmp_path / "dev"
    name = f"agent-dev-{sig}"
    agent = Agent(_args(est_server, device, "--secret-id", agent_secret[0], "--secret-file",
                        "-", "--cn", name), _device_env(est_server),
                  agent_secret[1].encode() + b"\n")
    try:
        enrolled = agent.until("enrolled")
        waiting = agent.until("waiting")
        # The secret is on no command line of the process and in nothing it prints.
        cmdline = Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes()
        assert agent_secret[1].encode() not in cmdline
        assert agent.stop(sig) == 0
        assert [line["state"] for line in agent.lines] == ["enrolling", "enrolled", "waiting",
                                                          "stopped"]
        assert agent_secret[1] not in json.dumps(agent.lines) + agent.stderr()
    finally:
        agent.kill()
    assert enrolled["device"] == waiting["device"] == name
    pair = usable_pair(device, est_server)
    assert pair.serial == enrolled["serial"] == waiting["serial"]
    renew_at = waiting["renew_at"]
    assert waiting["next_check"] == renew_at and renew_at > waiting["not_before"]


def test_the_running_agent_renews_when_due_then_pauses(est_server: Served,
                                                        agent_secret: tuple[str, str],
                                                        tmp_path: Path) -> None:
    """Told to renew with more left than the whole lifetime, it renews at once, then waits
    (not a renewal a second), and stops on SIGTERM."""
    device = tmp_path / "dev"
    agent = Agent(_args(est_server, device, "--secret-id", agent_secret[0], "--secret-file",
                        "-", "--cn", "agent-due-1", "--renew-before", "1000d"),
                  _device_env(est_server), agent_secret[1].encode())
    try:
        enrolled = agent.until("enrolled")
        renewed = agent.until("renewed")
        time.sleep(2)
        assert agent.stop(signal.SIGTERM) == 0
    finally:
        agent.kill()
    assert [line["state"] for line in agent.lines] == ["enrolling", "enrolled", "renewed",
                                                      "stopped"]
    assert renewed["serial"] != enrolled["serial"]
    assert renewed["next_check"] > renewed["renew_at"]  # the pause after a renewal
    assert usable_pair(device, est_server).serial == renewed["serial"]


def test_the_agent_renews_once_when_due(est_server: Served, agent_secret: tuple[str, str],
                                        tmp_path: Path) -> None:
    device = tmp_path / "dev"
    secret_file = tmp_path / "secret"
    secret_file.write_text(agent_secret[1])
    env = _device_env(est_server)
    first = run_script(*_args(est_server, device, "--secret-id", agent_secret[0],
                              "--secret-file", str(secret_file), "--cn", "agent-once-1",
                              "--once"), env=env)
    assert first.returncode == 0, first.stderr
    states = [json.loads(line) for line in first.stdout.splitlines()]
    assert [s["state"] for s in states] == ["enrolling", "enrolled", "waiting"]
    # Enrolled: the credential is not needed any more, and a due certificate is renewed.
    again = run_script(*_args(est_server, device, "--once", "--renew-before", "1000d"),
                       env=env)
    assert again.returncode == 0, again.stderr
    holding, renewed = (json.loads(line) for line in again.stdout.splitlines())
    assert holding["state"] == "holding" and renewed["state"] == "renewed"
    assert holding["serial"] == states[1]["serial"] != renewed["serial"]
    assert usable_pair(device, est_server).serial == renewed["serial"]
    assert sorted(p.name for p in device.iterdir()) == [".lock", "cert.pem", "key.pem"]


def test_the_agent_refuses_without_a_credential_or_with_a_bad_one(
        est_server: Served, tmp_path: Path) -> None:
    env = _device_env(est_server)
    for extra, says in [
        ((), "give --secret-id and --secret-file"),
        (("--secret-id", "es_aaaaaaaaaaaaaaaa"), "together"),
        (("--secret-id", "es_aaaaaaaaaaaaaaaa", "--secret-file", str(tmp_path / "none")),
         "does not exist"),
        (("--secret-id", "es_aaaaaaaaaaaaaaaa", "--secret-file", str(est_server.chain),
          "--claim-cert", "c", "--claim-key", "k"), "not both"),
    ]:
        done = run_script(*_args(est_server, tmp_path / "d", *extra), env=env)
        assert_refused_process(done, says)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret")
    done = run_script(*_args(est_server, tmp_path / "d", "--secret-id", "es_aaaaaaaaaaaaaaaa",
                             "--secret-file", str(wrong), "--cn", "agent-nobody"), env=env)
    assert_refused_process(done, "did not accept the credential")
    assert "not-the-secret" not in done.stdout + done.stderr
    assert not (tmp_path / "d" / "cert.pem").exists()
    events = operator(est_server, "events", "list", "--kind", "est.refused")
    assert "not-the-secret" not in json.dumps(events)


def assert_refused_process(done: subprocess.CompletedProcess[str], says: str) -> None:
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert all(json.loads(line)["state"] == "enrolling" for line in lines), done.stdout
    assert_refused(Result(done.returncode, "", done.stderr))
    assert says in done.stderr, done.stderr
