"""Broker log lines become security events (stored like every other event)."""

from __future__ import annotations

from pathlib import Path

from iotsec.app.broker.events import ingest_log
from iotsec.app.events import list_events
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.quarantine import quarantine_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import DeviceState

T = "2026-11-26T03:00:{:02d}+0000: "
LOG = [
    "mosquitto version 2.0.11 running",
    "New connection from 127.0.0.1:40001 on port 8883.",
    "New client connected from 127.0.0.1:40001 as d1 (p5, c1, k60, u'd1').",
    "d1 1 devices/d1/#",
    "d1 1 devices/+/secret",
    "Denied PUBLISH from d1 (d0, q1, r0, m2, 'devices/d2/t', ... (1 bytes))",
    # A second connection with d1's certificate (a clone?) takes the session over.
    "New connection from 10.9.9.9:50000 on port 8883.",
    "Client d1 already connected, closing old connection.",
    "New client connected from 10.9.9.9:50000 as d1 (p4, c1, k60, u'd1').",
    # iotsec ends d2's session on its control socket.
    "New client connected from 127.0.0.1:40002 as d2 (p5, c1, k60, u'd2').",
    "Client d2 already connected, closing old connection.",
    "New client connected from /run/admin.sock:0 as d2 (p5, c1, k10, u'_iotsec_admin').",
    "Client d2 disconnected.",
    # A revoked certificate (TLS 1.3: the failure comes after the handshake).
    "New connection from 192.0.2.7:41000 on port 8883.",
    "OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed",
    "Client <unknown> disconnected: Protocol error.",
    # No certificate, refused while the connection was accepted.
    "Client connection from 203.0.113.9 failed: error:0A0000C7:SSL routines::peer did not "
    "return a certificate.",
    # iotsec's own probe is not an event.
    "New client connected from 127.0.0.1:40003 as _iotsec_probe (p5, c1, k10, "
    "u'_iotsec_probe').",
    "Denied PUBLISH from _iotsec_probe (d0, q1, r0, m9, 'iotsec/probe', ... (5 bytes))",
    "Client _iotsec_probe disconnected.",
    "Client d1 has exceeded timeout, disconnecting.",
    'Error: Unable to load certificate revocation file "/x/crl.pem". Check crlfile.',
    "d3 0 devices/d3/#",
]


def _write(path: Path, lines: list[str], start: int = 0) -> None:
    with path.open("a") as fh:
        for i, line in enumerate(lines):
            fh.write(T.format((start + i) % 60) + line + "\n")


def test_log_lines_become_events(rt: Runtime, tmp_path: Path) -> None:
    for d in ("d1", "d2", "d3"):
        add_device(rt, NewDevice.parse(d))
    change_state(rt, "d3", DeviceState.DISABLED)
    log, state = tmp_path / "mosquitto.log", tmp_path / "ingest.json"
    _write(log, LOG)
    result = ingest_log(rt, log, state_file=state)
    assert result.lines == len(LOG)
    assert result.by_kind == {"broker.connect": 2, "broker.subscribe": 2,
                              "broker.publish": 1, "broker.collision": 1,
                              "broker.takeover": 1, "broker.tls": 2,
                              "broker.disconnect": 1, "broker.error": 1}
    d1 = {e.kind: e for e in list_events(rt.engine, actor="d1")}
    assert d1["broker.publish"].subject == "devices/d2/t"
    assert d1["broker.publish"].source == "127.0.0.1:40001"
    assert d1["broker.subscribe"].subject == "devices/+/secret"
    assert d1["broker.collision"].source == "10.9.9.9:50000"
    assert d1["broker.collision"].detail["previous_source"] == "127.0.0.1:40001"
    assert d1["broker.disconnect"].outcome == "failure"
    accepted, refused = list_events(rt.engine, kind="broker.tls")
    assert refused.source == "192.0.2.7:41000" and "verify failed" in refused.detail["error"]
    assert accepted.source == "203.0.113.9" and "certificate" in accepted.detail["error"]
    d3 = list_events(rt.engine, actor="d3")
    assert d3[0].detail["reason"] == "device is disabled"
    assert not list_events(rt.engine, actor="_iotsec_probe")
    assert list_events(rt.engine, actor="d2")[0].kind == "broker.takeover"


def test_ingest_resumes_and_follows_rotation(rt: Runtime, tmp_path: Path) -> None:
    log, state = tmp_path / "mosquitto.log", tmp_path / "ingest.json"
    _write(log, ["Client a disconnected."])
    assert ingest_log(rt, log, state_file=state).events == 1
    assert ingest_log(rt, log, state_file=state).events == 0
    with log.open("a") as fh:
        fh.write(T.format(1) + "Client b disconnected.\n" + T.format(2) + "Client c dis")
    assert ingest_log(rt, log, state_file=state).events == 1  # the partial line waits
    with log.open("a") as fh:
        fh.write("connected.\n")
    assert ingest_log(rt, log, state_file=state).events == 1
    log.rename(tmp_path / "mosquitto.log.1")
    _write(log, ["Client d disconnected.", "Client e disconnected."])
    assert ingest_log(rt, log, state_file=state).events == 2
    # An over-long line is skipped without being kept whole.
    with log.open("a") as fh:
        fh.write(T.format(3) + "x" * 80_000 + "\n" + T.format(4) + "Client f disconnected.\n")
    assert ingest_log(rt, log, state_file=state).events == 1
    assert {e.actor for e in list_events(rt.engine, kind="broker.disconnect")} == set("abcdef")


def test_a_quarantined_device_subscribing_to_its_remediation_topic_is_no_event(
        rt: Runtime, tmp_path: Path) -> None:
    add_device(rt, NewDevice.parse("q1"))
    quarantine_devices(rt, Selector.parse(["q1"]), actor="test")
    log = tmp_path / "mosquitto.log"
    _write(log, ["New client connected from 127.0.0.1:40009 as q1 (p5, c1, k60, u'q1').",
                 "q1 1 quarantine/q1/#", "q1 1 devices/q1/#"])
    ingest_log(rt, log, state_file=tmp_path / "ingest.json")
    denied = list_events(rt.engine, kind="broker.subscribe", actor="q1")
    assert [e.subject for e in denied] == ["devices/q1/#"]
    assert "quarantined" in denied[0].detail["reason"]
