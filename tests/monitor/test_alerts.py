"""Alerts from the scheduled checks, their states, and their delivery to a real local
webhook receiver: signed, retried with backoff, given up after the last attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from iotsec.app.identity import devices
from iotsec.app.monitor.alerts import get_alert, list_alerts, raise_alert, set_state
from iotsec.app.monitor.audit_alerts import audit_alerts_due, run_audit_alerts
from iotsec.app.monitor.chain import verify
from iotsec.app.monitor.checks import run_checks
from iotsec.app.monitor.delivery import deliver_due
from iotsec.app.pki import authorities as ca
from iotsec.app.pki import issuance
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import OfflineRoot, init_home
from iotsec.config import Settings
from iotsec.errors import ConflictError, InvalidInputError, NotFoundError
from iotsec.eventlog.alerts import DELIVERY_ATTEMPTS, AlertState, NewAlert
from iotsec.findings.model import Severity
from iotsec.store import models as m
from iotsec.store.db import transaction
from tests.cli.support import Cli, use_home
from tests.conftest import FakeClock
from tests.helpers import make_csr

SECRET = "a webhook secret of some length"


class Receiver:
    """A real HTTP server on loopback that records what it receives and answers
    ``status``."""

    def __init__(self) -> None:
        self.status = 204
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(rt: Runtime) -> Iterator[Receiver]:
    r = Receiver()
    rt.settings.alert_webhook_url = r.url
    rt.settings.alert_webhook_secret = SecretStr(SECRET)
    yield r
    r.close()


def _expiring(rt: Runtime, device_id: str, days: int) -> str:
    devices.add_device(rt, devices.NewDevice.parse(device_id))
    return issuance.issue_from_csr(rt, device_id, make_csr(), days=days).serial


def test_an_expiring_certificate_raises_one_alert_until_it_is_gone(rt: Runtime,
                                                                  clock: FakeClock) -> None:
    _expiring(rt, "soon-1", 5)
    _expiring(rt, "later-1", 200)
    first = run_checks(rt)
    assert len(first.raised) == 1
    alert = get_alert(rt, first.raised[0])
    assert alert.rule == "cert.expiring" and alert.severity is Severity.HIGH
    assert alert.evidence["count"] == 1 and alert.evidence["first"][0]["device"] == "soon-1"
    again = run_checks(rt)
    assert again.raised == [] and again.repeated == first.raised
    assert get_alert(rt, first.raised[0]).count == 2
    clock.advance(timedelta(days=6))  # it expired: nothing is about to expire any more
    done = run_checks(rt)
    assert done.resolved == first.raised
    assert get_alert(rt, first.raised[0]).resolved_by == "iotsec"
    assert verify(rt).ok


def test_states_move_one_way(rt: Runtime) -> None:
    _expiring(rt, "soon-2", 3)
    alert_id = run_checks(rt).raised[0]
    acked = set_state(rt, alert_id, AlertState.ACKNOWLEDGED, actor="ops")
    assert acked.state is AlertState.ACKNOWLEDGED and acked.acknowledged_by == "ops"
    with pytest.raises(ConflictError):
        set_state(rt, alert_id, AlertState.ACKNOWLEDGED, actor="ops")
    set_state(rt, alert_id, AlertState.RESOLVED, actor="ops")
    with pytest.raises(ConflictError):
        set_state(rt, alert_id, AlertState.ACKNOWLEDGED, actor="ops")
    with pytest.raises(InvalidInputError):
        set_state(rt, alert_id, AlertState.OPEN)
    with pytest.raises(NotFoundError):
        set_state(rt, 999_999, AlertState.RESOLVED)
    # Resolved by hand while the condition holds: the next check opens a new one.
    assert run_checks(rt).raised not in ([], [alert_id])
    with rt.engine.connect() as conn:
        kinds = list(conn.execute(select(m.events.c.kind).where(
            m.events.c.kind.like("alert.%")).order_by(m.events.c.seq)).scalars())
    assert kinds == ["alert.raised", "alert.acknowledged", "alert.resolved", "alert.raised"]


def test_a_stale_crl_and_an_expiring_ca_are_alerts(rt: Runtime, clock: FakeClock) -> None:
    from iotsec.app.pki.crl import current_crl

    current_crl(rt)
    clock.advance(timedelta(hours=rt.settings.crl_lifetime_hours + 1))
    rules = {get_alert(rt, i).rule for i in run_checks(rt).raised}
    assert "crl.stale" in rules
    clock.advance(timedelta(days=10 * 365 - 20))
    rules = {(a.rule, a.severity) for a in list_alerts(rt)} | {
        (get_alert(rt, i).rule, get_alert(rt, i).severity) for i in run_checks(rt).raised}
    assert ("ca.expiring", Severity.CRITICAL) in rules


def test_the_webhook_gets_a_signed_alert(rt: Runtime, receiver: Receiver) -> None:
    _expiring(rt, "soon-3", 2)
    alert_id = run_checks(rt).raised[0]
    result = deliver_due(rt)
    assert (result.delivered, result.failed, result.dead) == (1, 0, 0)
    headers, body = receiver.received[0]
    expected = hmac.new(SECRET.encode(), headers["x-iotsec-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["x-iotsec-signature"] == f"sha256={expected}"
    doc = json.loads(body)
    assert doc["alert"]["id"] == alert_id and doc["alert"]["rule"] == "cert.expiring"
    assert get_alert(rt, alert_id).deliveries == {"webhook": "delivered"}
    assert deliver_due(rt).delivered == 0  # once


def test_a_failing_webhook_is_retried_then_given_up(rt: Runtime, receiver: Receiver,
                                                    clock: FakeClock) -> None:
    receiver.status = 500
    _expiring(rt, "soon-4", 2)
    alert_id = run_checks(rt).raised[0]
    assert deliver_due(rt).failed == 1
    assert deliver_due(rt).failed == 0  # not due yet: backoff
    for _ in range(DELIVERY_ATTEMPTS - 1):
        clock.advance(timedelta(hours=2))
        deliver_due(rt)
    assert len(receiver.received) == DELIVERY_ATTEMPTS
    assert get_alert(rt, alert_id).deliveries == {"webhook": "dead"}
    with rt.engine.connect() as conn:
        row = conn.execute(select(m.alert_deliveries)).one()
        dead = conn.execute(select(m.events.c.outcome).where(
            m.events.c.kind == "alert.delivery-dead")).scalars().all()
    assert row.last_error == "HTTP 500" and dead == ["failure"]


def test_nothing_is_sent_unsigned_or_in_clear_to_another_host(rt: Runtime,
                                                              receiver: Receiver) -> None:
    _expiring(rt, "soon-5", 2)
    run_checks(rt)
    rt.settings.alert_webhook_secret = None
    assert deliver_due(rt).failed == 1 and receiver.received == []
    with rt.engine.connect() as conn:
        assert "unsigned" in conn.execute(select(m.alert_deliveries.c.last_error)).scalar_one()
    rt.settings.alert_webhook_secret = SecretStr(SECRET)
    rt.settings.alert_webhook_url = "http://192.0.2.1/hook"
    from iotsec.app.monitor.delivery import webhook_target
    from iotsec.errors import ConfigError

    with pytest.raises(ConfigError, match="plain http"):
        webhook_target(rt)


def test_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
    use_home(monkeypatch, tmp_path / "home")
    cli = Cli(capsys)
    assert cli.json("alerts", "check") == {"raised": [], "repeated": [], "resolved": []}
    cli.ok("device", "add", "d-1")
    (tmp_path / "d.csr").write_bytes(make_csr())
    cli.ok("cert", "issue", "d-1", "--csr", str(tmp_path / "d.csr"), "--days", "3")
    raised = cli.json("alerts", "check")["raised"]
    assert len(raised) == 1
    listed = cli.json("alerts", "list", "--state", "open")
    assert [a["id"] for a in listed] == raised and listed[0]["severity"] == "high"
    assert "cert.expiring" in cli.ok("alerts", "list").out
    assert cli.json("alerts", "ack", str(raised[0]))["state"] == "acknowledged"
    assert cli.json("alerts", "resolve", str(raised[0]))["resolved_by"] == "cli"
    assert "is resolved already" in cli.refused("alerts", "resolve", str(raised[0]))
    assert "does not exist" in cli.refused("alerts", "show", "4242")
    assert "unknown alert state" in cli.refused("alerts", "list", "--state", "closed")


def test_an_offline_root_crl_is_warned_of_two_weeks_ahead(settings: Settings, clock: FakeClock,
                                                          tmp_path: Path) -> None:
    """Its next CRL is signed in a ceremony on another machine: 6 hours would be too late."""
    init_home(settings, now=clock(), offline_root=OfflineRoot(tmp_path / "root.key", b"p" * 16),
              store_passphrase=True)
    rt = open_runtime(settings, clock=clock)
    try:
        root = ca.get_authority(rt, ca.resolve_ca(rt, "root"))
        next_update = ca.authority_crl(rt, root.id).next_update
        assert next_update is not None

        def root_alerts() -> list[str]:
            run_checks(rt)
            return [a.summary for a in list_alerts(rt)
                    if a.rule == "crl.stale" and a.subject == root.subject]

        clock.now = next_update - timedelta(days=15)
        assert root_alerts() == []
        clock.now = next_update - timedelta(days=13)
        (summary,) = root_alerts()
        assert "within 14 days" in summary
        (alert,) = [a for a in list_alerts(rt) if a.subject == root.subject]
        assert "ca sign-crl" in alert.suggested and alert.evidence["key_offline"] is True
    finally:
        rt.close()


def test_the_scheduled_audit_raises_findings_and_resolves_the_gone(rt: Runtime,
                                                                   clock: FakeClock) -> None:
    assert audit_alerts_due(rt)  # never run
    assert run_audit_alerts(rt).raised == []  # a fresh home has no high finding
    assert not audit_alerts_due(rt)  # ran just now (its audit.run event says so)
    with transaction(rt.engine) as conn:  # an alert of a finding that is no longer there
        gone, _ = raise_alert(rt, conn, NewAlert(
            rule="audit/device-weak-key", severity=Severity.HIGH, subject="device:old",
            summary="s", suggested="r", evidence={}))
    clock.advance(timedelta(days=10 * 365 - 20))  # the CAs near their end
    assert audit_alerts_due(rt)
    done = run_audit_alerts(rt)
    assert done.resolved == [gone]
    raised = [get_alert(rt, i) for i in done.raised]
    assert raised and {a.rule for a in raised} == {"audit/ca-expiring"}
    assert all(a.severity >= Severity.HIGH and a.evidence["finding"] for a in raised)
    again = run_audit_alerts(rt)  # found again: counted, not raised twice
    assert again.raised == [] and sorted(again.repeated) == sorted(done.raised)
