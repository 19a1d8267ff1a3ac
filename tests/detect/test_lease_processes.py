"""Two real detector processes on one store: exactly one follows the log; when it is
killed, the other takes over within 10 s and reads on from where it stopped, so no line
is counted twice and no alert is raised twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotsec.app.detect.lease import lease_info
from iotsec.app.detect.rules import apply_rules
from iotsec.app.events import list_events
from iotsec.app.monitor.alerts import list_alerts
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import InitResult
from iotsec.config import Settings
from tests.cli.support import CONSOLE_SCRIPT

LINE = ("2026-11-26T03:00:00+0000: Client connection from {source} failed: "
        "error:0A0000C7:SSL routines::peer did not return a certificate.\n")


class Detectors:
    def __init__(self, settings: Settings, log: Path, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
        self.env["IOTSEC_HOME"] = str(settings.home)
        if settings.database_url:
            self.env["IOTSEC_DATABASE_URL"] = settings.database_url
        self.log, self.tmp = log, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        err = (self.tmp / f"detector-{len(self.procs)}.err").open("wb")
        proc = subprocess.Popen([str(CONSOLE_SCRIPT), "detect", "run", "--log", str(self.log)],
                                env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def runtime(settings: Settings, initialised: InitResult) -> Iterator[Runtime]:
    rt = open_runtime(settings)  # the real clock, as the processes have
    yield rt
    rt.close()


def _holder_pid(rt: Runtime) -> int | None:
    info = lease_info(rt)
    if info is None or info.expires_at < rt.now().replace(microsecond=0):
        return None
    return int(info.holder.split(":")[1])


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_killed_holder_is_replaced_within_10_s(runtime: Runtime, settings: Settings,
                                                tmp_path: Path) -> None:
    rt = runtime
    apply_rules(rt, b"rules:\n  - {name: spray, kind: authn-failures, per: source, "
                b"window: 3600, threshold: 3}\n")
    log = tmp_path / "mosquitto.log"
    log.write_text("")
    detectors = Detectors(settings, log, tmp_path)
    try:
        first = detectors.start()
        assert _wait(lambda: _holder_pid(rt) == first.pid, 20), "the first never held"
        second = detectors.start()
        with log.open("a") as fh:
            fh.write(LINE.format(source="203.0.113.9") * 5)
        assert _wait(lambda: len(list_alerts(rt)) == 1, 10)
        assert _holder_pid(rt) == first.pid  # the second stands by
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = time.monotonic()
        with log.open("a") as fh:
            fh.write(LINE.format(source="198.51.100.1") * 5)
        assert _wait(lambda: _holder_pid(rt) == second.pid, 12)
        took = time.monotonic() - killed
        assert took < 10, took
        assert _wait(lambda: len(list_alerts(rt)) == 2, 10)
    finally:
        detectors.stop()
    alerts = sorted(list_alerts(rt), key=lambda a: a.subject)
    assert [(a.subject, a.count) for a in alerts] == [
        ("source:198.51.100.1", 1), ("source:203.0.113.9", 1)]
    assert len(list_events(rt.engine, kind="broker.tls")) == 10
    assert len(list_events(rt.engine, kind="alert.raised")) == 2
