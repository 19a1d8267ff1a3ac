"""The detector over the store (SQLite and PostgreSQL): Mosquitto 2.0 log lines and EMQX
hook decisions become events, alerts and mitigation actions; the read position survives
a restart, a rotation and a truncation; the lease has one holder at a time."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from iotsec.app.access.decisions import check
from iotsec.app.broker import emqx
from iotsec.app.compliance.facts import gather_facts
from iotsec.app.detect.actions import CAP_RULE, mitigate_findings
from iotsec.app.detect.lease import lease_info
from iotsec.app.detect.loop import Leader
from iotsec.app.detect.rules import apply_rules
from iotsec.app.detect.status import detect_status
from iotsec.app.events import list_events
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.monitor.alerts import list_alerts, raise_alert
from iotsec.app.monitor.incident_records import list_incidents
from iotsec.app.monitor.quarantine import release_devices
from iotsec.app.runtime import Runtime
from iotsec.detect.rules import parse_rules
from iotsec.errors import DetectionRuleError
from iotsec.eventlog.alerts import NewAlert
from iotsec.findings.model import Severity
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from tests.conftest import FakeClock

T = "2026-11-26T03:00:{:02d}+0000: "
TLS_FAIL = ("Client connection from 203.0.113.9 failed: error:0A0000C7:SSL routines::peer "
            "did not return a certificate.")
RULES = """\
version: 1
max_automatic_actions: 5
rules:
  - {name: spray, kind: authn-failures, per: source, window: 60, threshold: 3,
     severity: high}
  - {name: clone, kind: certificate-two-places, severity: critical}
  - {name: probing, kind: authz-denials, per: device, window: 60, threshold: 2,
     action: disable}
"""


def _write(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        for i, line in enumerate(lines):
            fh.write(T.format(i % 60) + line + "\n")


def _count(rt: Runtime, kind: str) -> int:
    with reading(rt.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(m.events)
                                .where(m.events.c.kind == kind)).scalar_one())


def _drain(leader: Leader) -> None:
    while leader.once():
        pass


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "mosquitto.log"


def test_log_lines_raise_alerts_with_evidence_and_act(rt: Runtime, log: Path) -> None:
    for d in ("alice", "bob"):
        add_device(rt, NewDevice.parse(d))
    apply_rules(rt, RULES.encode(), actor="test")
    _write(log, [TLS_FAIL] * 4 + [
        "New connection from 10.0.0.5:40001 on port 8883.",
        "New client connected from 10.0.0.5:40001 as alice-1 (p5, c1, k60, u'alice').",
        # The same certificate from somewhere else while the first session is open.
        "New connection from 192.0.2.1:50000 on port 8883.",
        "New client connected from 192.0.2.1:50000 as alice-2 (p5, c1, k60, u'alice').",
        "Received PUBLISH from alice-1 (d0, q0, r0, m0, 'devices/alice/t', ... (12 bytes))",
        "Denied PUBLISH from alice-1 (d0, q1, r0, m2, 'devices/bob/t', ... (1 bytes))",
        "Denied PUBLISH from alice-1 (d0, q1, r0, m3, 'devices/bob/u', ... (1 bytes))",
        "Denied PUBLISH from alice-1 (d0, q1, r0, m4, 'devices/bob/v', ... (1 bytes))",
        "Client bob closed its connection.",
    ])
    leader = Leader(rt, log_file=log, checks=False)
    _drain(leader)
    alerts = {a.rule: a for a in list_alerts(rt)}
    assert set(alerts) == {"spray", "clone", "probing"}
    spray = alerts["spray"]
    assert spray.subject == "source:203.0.113.9" and spray.evidence["count"] == 4
    evidence = {e.id: e for e in list_events(rt.engine, kind="broker.tls")}
    assert spray.evidence["events"] and set(spray.evidence["events"]) <= set(evidence)
    assert alerts["clone"].evidence["addresses"] == ["10.0.0.5", "192.0.2.1"]
    assert alerts["probing"].subject == "device:alice"
    # The rule's action: alice is disabled by the detector, on the chain.
    assert get_device(rt, "alice").state is DeviceState.DISABLED
    assert get_device(rt, "bob").state is not DeviceState.DISABLED
    state = list_events(rt.engine, kind="device.state", actor="detector:probing")
    assert [e.subject for e in state] == ["alice"]
    action = list_events(rt.engine, kind="detect.action")
    assert [(e.outcome, e.actor, e.detail["action"]) for e in action] == \
        [("success", "detector:probing", "disable")]
    # Nothing new: nothing raised again.
    _write(log, ["Client alice-2 disconnected."])
    _drain(leader)
    assert all(a.count == 1 for a in list_alerts(rt))
    leader.stop()


def test_a_restart_neither_loses_nor_double_counts(rt: Runtime, log: Path) -> None:
    connect = "New client connected from 10.0.0.{i}:4000 as d{i} (p5, c1, k60, u'd{i}')."
    _write(log, [connect.format(i=i) for i in range(10)])
    first = Leader(rt, log_file=log, checks=False)
    _drain(first)
    first.stop()  # releases the lease
    # A line the broker had not finished writing when the first process stopped.
    with log.open("a") as fh:
        fh.write(T.format(30) + connect.format(i=10)[:20])
    second = Leader(rt, log_file=log, checks=False)
    _drain(second)
    with log.open("a") as fh:
        fh.write(connect.format(i=10)[20:] + "\n")
    _write(log, [connect.format(i=i) for i in range(11, 15)])
    _drain(second)
    assert _count(rt, "broker.connect") == 15
    source = {s.source: s for s in detect_status(rt).sources}["mosquitto-log"]
    assert source.lines == 15 and source.lag == 0
    assert source.position == log.stat().st_size
    second.stop()


def test_rotation_and_truncation(rt: Runtime, log: Path) -> None:
    line = "New client connected from 10.0.0.1:4000 as d{i} (p5, c1, k60, u'd{i}')."
    _write(log, [line.format(i=i) for i in range(3)])
    leader = Leader(rt, log_file=log, checks=False)
    _drain(leader)
    # Written to the old file just before it was rotated, then a new file.
    _write(log, [line.format(i=3)])
    log.rename(log.with_suffix(".log.1"))
    _write(log, [line.format(i=i) for i in range(4, 6)])
    _drain(leader)
    assert _count(rt, "broker.connect") == 6
    # Truncated in place (copytruncate), then written again.
    log.write_text("")
    _drain(leader)
    _write(log, [line.format(i=6)])
    _drain(leader)
    assert _count(rt, "broker.connect") == 7
    leader.stop()


def test_emqx_hook_failures_feed_the_same_detector(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("victim"))
    apply_rules(rt, RULES.encode())
    leader = Leader(rt, log_file=None, checks=False)
    _drain(leader)
    body = json.dumps({"username": "victim", "clientid": "victim",
                       "peerhost": "198.51.100.4"}).encode()
    for _ in range(5):
        assert emqx.authenticate(rt, body, "127.0.0.1")["result"] == "deny"
    _drain(leader)
    alerts = list_alerts(rt)
    assert [(a.rule, a.subject) for a in alerts] == [("spray", "source:198.51.100.4")]
    assert len(alerts[0].evidence["events"]) == 4  # the events up to the one that fired
    # Failed logins in the victim's name never switch the victim off.
    assert get_device(rt, "victim").state is not DeviceState.DISABLED
    leader.stop()


def test_dry_run_and_the_hourly_cap(rt: Runtime, log: Path) -> None:
    for d in ("a1", "a2", "a3"):
        add_device(rt, NewDevice.parse(d))
    apply_rules(rt, b"""\
max_automatic_actions: 1
rules:
  - {name: probing, kind: authz-denials, window: 60, threshold: 0, action: disable}
  - {name: tryout, kind: message-size, threshold: 10, action: revoke, dry_run: true}
""")
    denied = "Denied PUBLISH from {d} (d0, q1, r0, m2, 'x/y', ... (1 bytes))"
    _write(log, [f"New client connected from 10.0.0.1:1 as {d} (p5, c1, k60, u'{d}')."
                 for d in ("a1", "a2", "a3")] + [denied.format(d="a1"), denied.format(d="a2"),
                 "Received PUBLISH from a3 (d0, q0, r0, m0, 'x/big', ... (5000 bytes))"])
    leader = Leader(rt, log_file=log, checks=False)
    _drain(leader)
    assert get_device(rt, "a1").state is DeviceState.DISABLED
    assert get_device(rt, "a2").state is not DeviceState.DISABLED  # over the cap
    assert get_device(rt, "a3").state is not DeviceState.DISABLED
    outcomes = {(e.subject, e.outcome) for e in list_events(rt.engine, kind="detect.action")}
    assert outcomes == {("a1", "success"), ("a2", "refused"), ("a3", "dry-run")}
    assert CAP_RULE in {a.rule for a in list_alerts(rt)}
    leader.stop()


def test_a_quarantine_action_opens_an_incident(rt: Runtime, log: Path) -> None:
    """The detector quarantines as 'iotsec incident quarantine' does: the device reaches only
    its remediation topic, one incident names the rule, and a release brings it back."""
    add_device(rt, NewDevice.parse("cam-1"))
    before = get_device(rt, "cam-1").state
    apply_rules(rt, b"""\
rules:
  - {name: probing, kind: authz-denials, window: 60, threshold: 1, action: quarantine}
""")
    denied = "Denied PUBLISH from cam-1 (d0, q1, r0, m{n}, 'devices/other/t', ... (1 bytes))"
    _write(log, ["New client connected from 10.0.0.1:1 as cam-1 (p5, c1, k60, u'cam-1')."]
           + [denied.format(n=n) for n in (2, 3)])
    leader = Leader(rt, log_file=log, checks=False)
    _drain(leader)
    leader.stop()
    assert get_device(rt, "cam-1").state is DeviceState.QUARANTINED
    (incident,) = list_incidents(rt)
    assert incident.actor == "detector:probing" and incident.state == "open"
    assert check(rt, "cam-1", "publish", "devices/cam-1/t").allowed is False
    assert check(rt, "cam-1", "publish", "quarantine/cam-1/report").allowed is True
    action = list_events(rt.engine, kind="detect.action")
    assert [(e.outcome, e.detail["action"]) for e in action] == [("success", "quarantine")]
    release_devices(rt, ["cam-1"], actor="test")
    assert get_device(rt, "cam-1").state is before


def test_one_lease_holder_and_a_takeover(rt: Runtime, clock: FakeClock, log: Path) -> None:
    _write(log, [TLS_FAIL] * 5)
    apply_rules(rt, RULES.encode())
    a = Leader(rt, holder="a", log_file=log, checks=False)
    b = Leader(rt, holder="b", log_file=log, checks=False)
    _drain(a)
    assert a.holding and not b.once() and not b.holding
    assert len(list_alerts(rt)) == 1
    # a stops renewing (a pause, a crash): b takes over once the lease has expired.
    clock.advance(timedelta(seconds=rt.settings.detect_lease_seconds + 1))
    _write(log, [TLS_FAIL] * 5)
    _drain(b)
    assert b.holding and lease_info(rt).holder == "b"  # type: ignore[union-attr]
    assert lease_info(rt).token == 2  # type: ignore[union-attr]
    # a wakes up and reads the same lines: it cannot commit them, and it stands by.
    assert a.follower is not None
    a.follower.log.position = 0  # type: ignore[union-attr]
    assert not a.once() and not a.holding
    assert _count(rt, "broker.tls") == 10
    # One alert (b counted the new failures again: it raised the same alert once more).
    assert len(list_alerts(rt)) == 1
    b.stop()


def test_compliance_5_10_1_from_the_detector_record(rt: Runtime, clock: FakeClock) -> None:
    assert gather_facts(rt)["monitor.detection"].ok is None
    leader = Leader(rt, log_file=None, checks=False)
    leader.once()
    fact = gather_facts(rt)["monitor.detection"]
    assert fact.ok is True and "11 rules" in fact.detail
    clock.advance(timedelta(minutes=20))
    assert gather_facts(rt)["monitor.detection"].ok is False
    leader.once()  # renews
    assert gather_facts(rt)["monitor.detection"].ok is True
    apply_rules(rt, b"rules:\n  - {name: x, kind: unusual-topic, enabled: false}\n")
    assert gather_facts(rt)["monitor.detection"].ok is False
    leader.stop()


def test_only_the_lease_holder_runs_the_scheduled_checks(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("cam-1"))  # an event for the checkpoint to sign
    holder = Leader(rt, holder="a", log_file=None, checks=True)
    other = Leader(rt, holder="b", log_file=None, checks=True)
    assert holder.once() is False and holder.holding
    # The holder ran them: alert checks, campaign ticks and a signed checkpoint.
    assert holder.last_checks > 0 and holder.last_tick > 0 and holder.last_checkpoint > 0
    with reading(rt.engine) as conn:
        signed = int(conn.execute(select(func.count()).select_from(m.event_checkpoints))
                     .scalar_one())
    assert signed == 1
    other.once()
    assert not other.holding  # the other did not
    assert (other.last_checks, other.last_tick, other.last_checkpoint) == (0, 0, 0)
    holder.stop()


def test_actions_bound_to_audit_findings(rt: Runtime) -> None:
    """The rule file's audit section: a new alert of a bound finding acts on the device the
    finding names (a device key's location included); dry runs and unbound findings don't."""
    for d in ("cam-1", "cam-2", "cam-3"):
        add_device(rt, NewDevice.parse(d))
    rules = parse_rules(b"""\
audit:
  - {finding: audit/device-weak-key, action: disable}
  - {finding: audit/shared-certificate, action: revoke, dry_run: true}
""")
    with transaction(rt.engine) as conn:
        ids = [raise_alert(rt, conn, NewAlert(rule=rule, severity=Severity.HIGH,
                                              subject=subject, summary="s", suggested="r",
                                              evidence={}))[0]
               for rule, subject in (("audit/device-weak-key", "device:cam-1#key:k1"),
                                     ("audit/shared-certificate", "device:cam-2"),
                                     ("audit/ca-expiring", "ca:issuing"))]
    done = mitigate_findings(rt, ids, rules)
    assert [(o.action.value, o.outcome) for o in done] == [("disable", "success"),
                                                          ("revoke", "dry-run")]
    assert get_device(rt, "cam-1").state is DeviceState.DISABLED
    assert get_device(rt, "cam-2").state is not DeviceState.DISABLED
    actions = list_events(rt.engine, kind="detect.action")
    assert {(e.actor, e.subject, e.outcome) for e in actions} == {
        ("detector:audit/device-weak-key", "cam-1", "success"),
        ("detector:audit/shared-certificate", "cam-2", "dry-run")}


def test_audit_bindings_are_checked() -> None:
    with pytest.raises(DetectionRuleError, match=r"line 3: .*refused on audit/client-id"):
        parse_rules(b"audit:\n  - {finding: audit/ca-expiring}\n"
                    b"  - {finding: audit/client-id-conflict, action: quarantine}\n")
    with pytest.raises(DetectionRuleError, match=r"line 3: finding .* bound twice"):
        parse_rules(b"audit:\n  - {finding: audit/ca-expiring}\n"
                    b"  - {finding: audit/ca-expiring, action: notify}\n")
    with pytest.raises(DetectionRuleError, match="line 2"):
        parse_rules(b"audit:\n  - {finding: not-an-audit-rule}\n")
