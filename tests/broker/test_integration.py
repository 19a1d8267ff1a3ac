"""iotsec against a real Mosquitto: each test renders a broker directory, starts its own
``mosquitto -c DIR/mosquitto.conf`` on a free port and stops it by its pid."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import update

from iotsec import brokerctl as control
from iotsec.app.broker import mosquitto as service
from iotsec.app.events import list_events
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.crl import current_crl
from iotsec.app.pki.issuance import renew
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.broker.mosquitto import Layout
from iotsec.device import DeviceClient, MqttConnectError, MqttNotAuthorizedError
from iotsec.errors import BrokerCrlError, BrokerReloadError, InvalidInputError
from iotsec.identity.registry import DeviceState
from iotsec.sdk.credentials import key_pem, make_csr
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts
from tests.broker.support import (
    Broker,
    Creds,
    Inbox,
    enroll,
    foreign_ca_creds,
    mqtt_tls_connect,
    running,
    wait_for,
)


@dataclass
class Setup:
    rt: Runtime
    layout: Layout
    broker: Broker
    port: int
    creds: Path

    def client(self, c: Creds, **options: object) -> DeviceClient:
        return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", self.port,
                                       timeout=3.0, **options)  # type: ignore[arg-type]

    def sync(self) -> service.SyncResult:
        return service.sync(self.rt, self.layout.root, pid=self.broker.pid)


@pytest.fixture
def setup(brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path
          ) -> Iterator[Setup]:
    creds = tmp_path / "creds"
    enroll(brt, "alice", creds)
    enroll(brt, "bob", creds)
    service.render(brt, broker_dir, service.BrokerOptions(
        port=port, broker_user=service.default_broker_user()))
    layout = Layout.parse(broker_dir)
    with running(mosquitto, layout) as broker:
        yield Setup(brt, layout, broker, port, creds)


def _creds(s: Setup, device_id: str) -> Creds:
    found = sorted(s.creds.glob(f"{device_id}-*.crt"))
    cert = found[-1]
    return Creds(device_id, cert, cert.with_suffix(".key"), s.creds / "ca.pem", "")


def _raw_client(s: Setup, c: Creds, client_id: str = "", *, will: str | None = None
                ) -> mqtt.Client:
    """A plain paho client (MQTT 5) for attacks the SDK would not make."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    ctx = ssl.create_default_context(cafile=str(c.ca))
    ctx.load_cert_chain(str(c.cert), str(c.key))
    client.tls_set_context(ctx)
    if will:
        client.will_set(will, b"forged will", qos=1)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", s.port)
    client.loop_start()
    assert connected.wait(3)
    return client


def test_allowed_publish_and_subscribe_end_to_end(setup: Setup) -> None:
    inbox = Inbox()
    with setup.client(_creds(setup, "alice")) as alice:
        assert alice.subscribe("devices/alice/#", inbox) == 1
        alice.publish("devices/alice/telemetry", b"21.5")
        assert inbox.event.wait(3)
    assert [(m.topic, m.payload) for m in inbox.messages] == [
        ("devices/alice/telemetry", b"21.5")]


def test_other_devices_topics_deliver_nothing(setup: Setup) -> None:
    """What an attacker device (bob) tries against alice: wide and shared subscriptions,
    retained messages, forged publishes and will messages, and alice's client id."""
    got = Inbox()
    alice_inbox = Inbox()
    alice = setup.client(_creds(setup, "alice"))
    alice.connect()
    alice.subscribe("devices/alice/#", alice_inbox)
    alice.subscribe("commands/alice/#", alice_inbox)
    alice.publish("devices/alice/state", b"retained secret", retain=True)
    bob = setup.client(_creds(setup, "bob"))
    bob.connect()
    # acl_file grants every SUBACK; delivery is what is checked.
    for f in ("#", "devices/+/#", "devices/alice/#", "$share/g/devices/alice/#", "+/alice/#",
              "$SYS/#"):
        bob.subscribe(f, got)
    alice.publish("devices/alice/telemetry", b"secret")
    # bob may not write into alice's topics: MQTT 5 reason code 0x87.
    for topic in ("devices/alice/telemetry", "commands/alice/reboot", "devices/alice/state"):
        with pytest.raises(MqttNotAuthorizedError) as refused:
            bob.publish(topic, b"forged")
        assert refused.value.reason_code == 0x87
    # A forged will into alice's commands, fired by an unclean disconnect.
    mallory = enroll(setup.rt, "mallory", setup.creds)  # the patterns cover it at once
    willer = _raw_client(setup, mallory, will="commands/alice/reboot")
    sock = willer.socket()
    willer.loop_stop()
    assert sock is not None
    sock.close()
    # Taking alice's client id does not reach alice: the broker uses the CN as client id.
    hijack = _raw_client(setup, mallory, client_id="alice")
    hijack.disconnect()
    hijack.loop_stop()
    alice.publish("devices/alice/after", b"still here")
    assert wait_for(lambda: any(x.topic == "devices/alice/after"
                                for x in alice_inbox.messages), 3)
    time.sleep(0.3)
    assert got.messages == []
    assert all(x.payload != b"forged" and x.payload != b"forged will"
               for x in alice_inbox.messages)
    assert alice.connected
    alice.close()
    bob.close()


def _tls_connect(s: Setup, c: Creds | None, *, ca: Path | None = None) -> str:
    """Try a TLS connection and an MQTT CONNECT; returns 'connected' or the failure."""
    return mqtt_tls_connect(s.port, ca or s.creds / "ca.pem",
                            c.cert if c else None, c.key if c else None)


def test_bad_clients_cannot_connect(setup: Setup, tmp_path: Path) -> None:
    rt = setup.rt
    good = _creds(setup, "alice")
    assert _tls_connect(setup, good) == "connected"
    # No client certificate.
    assert _tls_connect(setup, None).startswith("failed")
    # A certificate for alice from a CA the broker does not trust.
    assert _tls_connect(setup, foreign_ca_creds("alice", tmp_path / "rogue",
                                                good.ca)).startswith("failed")
    # An expired certificate (issued as if three days ago, valid for one day).
    past = open_runtime(rt.settings, clock=lambda: rt.now() - timedelta(days=3))
    try:
        expired = enroll(past, "carol", tmp_path / "old", days=1)
    finally:
        past.close()
    assert _tls_connect(setup, expired).startswith("failed")
    # A revoked certificate, after a sync.
    victim = enroll(rt, "dave", setup.creds)
    assert _tls_connect(setup, victim) == "connected"
    revoke(rt, victim.serial)
    setup.sync()
    assert "revoked" in _tls_connect(setup, victim)
    # Plaintext MQTT to the TLS port.
    with socket.create_connection(("127.0.0.1", setup.port), timeout=3) as plain:
        plain.sendall(control.connect_packet())
        plain.settimeout(3)
        try:
            answer = plain.recv(16)
        except OSError:
            answer = b""
    assert not answer.startswith(b"\x20")


def _disconnected_within(client: DeviceClient, seconds: float) -> bool:
    return wait_for(lambda: not client.connected, seconds)


def test_revoked_live_session_is_dropped_within_5s(setup: Setup) -> None:
    victim = enroll(setup.rt, "erin", setup.creds)
    setup.sync()
    client = setup.client(victim, min_backoff=1, max_backoff=1)
    client.connect()
    client.publish("devices/erin/telemetry", b"1")
    start = time.monotonic()
    revoke(setup.rt, victim.serial)
    result = setup.sync()
    assert _disconnected_within(client, 5 - (time.monotonic() - start))
    assert time.monotonic() - start < 5
    assert result.kicked == ("erin",)
    # ... and it cannot come back (paho keeps retrying in the background).
    time.sleep(1.5)
    assert not client.connected
    client.close()
    kicks = list_events(setup.rt.engine, kind="broker.kick", actor="erin")
    assert kicks and kicks[0].detail == {"reason": "certificate revoked"}


def test_disabled_device_is_dropped_and_refused_everything(setup: Setup) -> None:
    frank = enroll(setup.rt, "frank", setup.creds)
    setup.sync()
    client = setup.client(frank)
    client.connect()
    start = time.monotonic()
    change_state(setup.rt, "frank", DeviceState.DISABLED)
    setup.sync()
    assert _disconnected_within(client, 5 - (time.monotonic() - start))
    client.close()
    # Refused at CONNECT: the broker's own CRL holds its certificate (no CONNACK 0) ...
    assert "revoked" in _tls_connect(setup, frank)
    with pytest.raises(MqttConnectError):
        setup.client(frank).connect()
    # ... while the published CRL does not list it (disabling is reversible).
    published = x509.load_der_x509_crl(current_crl(setup.rt).der)
    assert published.get_revoked_certificate_by_serial_number(int(frank.serial, 16)) is None
    bundle = (setup.layout.current / "crl.pem").read_text()
    held = [x509.load_pem_x509_crl(("-----BEGIN X509 CRL-----" + part).encode())
            for part in bundle.split("-----BEGIN X509 CRL-----")[1:]]
    entries = [c.get_revoked_certificate_by_serial_number(int(frank.serial, 16)) for c in held]
    hold = next(e for e in entries if e is not None)
    assert hold.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        is x509.ReasonFlags.certificate_hold
    # The ACL refuses it everything too (defence in depth).
    acl = (setup.layout.current / "acl").read_text()
    assert "user frank\ntopic deny #" in acl
    # Enabled again, it connects again after a sync, and its hold is gone.
    change_state(setup.rt, "frank", DeviceState.ACTIVE)
    assert service.sync_needed(setup.rt, setup.layout.root)
    setup.sync()
    assert _tls_connect(setup, frank) == "connected"
    with setup.client(frank) as back:
        back.publish("devices/frank/telemetry", b"ok")
    # Retired: refused at CONNECT as well (its certificates are revoked for good).
    change_state(setup.rt, "frank", DeviceState.RETIRED)
    setup.sync()
    assert "revoked" in _tls_connect(setup, frank)


def test_sync_with_corrupted_crl_is_refused_and_previous_crl_still_enforced(
        setup: Setup) -> None:
    victim = enroll(setup.rt, "gina", setup.creds)
    revoke(setup.rt, victim.serial)
    setup.sync()
    generation = service.current_generation(setup.layout)
    crl_before = (setup.layout.current / "crl.pem").read_bytes()
    # The stored CRL is replaced by garbage that looks fresh.
    with transaction(setup.rt.engine) as conn:
        conn.execute(update(m.crls).where(m.crls.c.authority_id == setup.rt.issuing_id())
                     .values(der=b"\x30\x03\x02\x01\x00", stale=False,
                             this_update=ts(setup.rt.now())))
    with pytest.raises(BrokerCrlError):
        setup.sync()
    assert service.current_generation(setup.layout) == generation
    assert (setup.layout.current / "crl.pem").read_bytes() == crl_before
    assert "revoked" in _tls_connect(setup, victim)
    assert _tls_connect(setup, _creds(setup, "alice")) == "connected"
    failures = list_events(setup.rt.engine, kind="broker.sync")
    assert failures[0].outcome == "failure"


def test_a_broker_that_lost_its_crl_or_acl_is_caught(setup: Setup) -> None:
    """Mosquitto 2.0.11 keeps running without revocation checking (or without any ACL)
    when a reload cannot load the CRL (or the ACL). The probes catch both."""
    service.confirm(setup.layout, service.options_of(setup.layout))
    current = setup.layout.current
    crl = (current / "crl.pem").read_bytes()
    for name, broken in (("crl.pem", b"garbage\n"), ("acl", b"pattern read a/#/b\n")):
        original = (current / name).read_bytes()
        (current / name).write_bytes(broken)
        os.kill(setup.broker.pid, signal.SIGHUP)
        time.sleep(0.3)
        with pytest.raises(BrokerReloadError, match="not enforcing"):
            service.confirm(setup.layout, service.options_of(setup.layout))
        (current / name).write_bytes(original)
        os.kill(setup.broker.pid, signal.SIGHUP)
        time.sleep(0.3)
    assert (current / "crl.pem").read_bytes() == crl
    service.confirm(setup.layout, service.options_of(setup.layout))


def test_plain_localhost_listener_is_loopback_only_and_not_anonymous(
        brt: Runtime, broker_dir: Path, port: int, mosquitto: str) -> None:
    from tests.ports import free_port

    plain = free_port()
    service.render(brt, broker_dir, service.BrokerOptions(
        port=port, plain_localhost_port=plain, broker_user=service.default_broker_user()))
    layout = Layout.parse(broker_dir)
    assert f"listener {plain} 127.0.0.1" in layout.conf.read_text()
    with running(mosquitto, layout):
        with socket.create_connection(("127.0.0.1", plain), timeout=3) as s:
            s.sendall(control.connect_packet())
            kind, body = control.read_packet(s)
        assert kind >> 4 == 2 and body[1] == 0x87  # CONNACK: not authorized


def test_broker_log_becomes_security_events(setup: Setup) -> None:
    from iotsec.app.broker.events import ingest_log

    alice = setup.client(_creds(setup, "alice"))
    alice.connect()
    with pytest.raises(MqttNotAuthorizedError):
        alice.publish("devices/bob/x", b"x")
    alice.subscribe("devices/+/telemetry", Inbox())
    alice.close()
    first = _raw_client(setup, _creds(setup, "bob"))
    second = _raw_client(setup, _creds(setup, "bob"))  # same certificate: a clone?
    for c in (first, second):
        c.disconnect()
        c.loop_stop()
    _tls_connect(setup, None)
    log = setup.layout.log_file
    assert wait_for(lambda: ("Client <unknown> disconnected" in log.read_text()
                             or "peer did not return a certificate." in log.read_text())
                    and "Client bob already connected" in log.read_text(), 3), \
        log.read_text()[-3000:]
    state = setup.layout.private / "ingest.json"
    result = ingest_log(setup.rt, setup.layout.log_file, state_file=state)
    kinds = result.by_kind
    for kind in ("broker.connect", "broker.disconnect", "broker.publish", "broker.subscribe",
                 "broker.tls", "broker.collision"):
        assert kinds.get(kind), (kind, kinds)
    events = list_events(setup.rt.engine, actor="alice", limit=50)
    denied = [e for e in events if e.kind == "broker.publish"]
    assert denied[0].subject == "devices/bob/x" and denied[0].outcome == "denied"
    connects = [e for e in events if e.kind == "broker.connect"]
    assert connects[0].source and connects[0].source.startswith("127.0.0.1:")
    # Nothing new: a second ingest reads from where the first stopped.
    assert ingest_log(setup.rt, setup.layout.log_file, state_file=state).events == 0


def test_user_blocks_and_patterns_on_the_real_broker(
        brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path) -> None:
    """Mosquitto checks a user's own block before the pattern lines: the compiled ACL
    repeats every deny in each block, so a role's grant never beats another role's deny."""
    from iotsec.access.policy import Role, Rule
    from iotsec.app.access.roles import add_role, write_role
    from iotsec.app.identity.bindings import policy_changed

    with transaction(brt.engine) as conn:  # the default role every device gets
        write_role(conn, Role.build("device", [
            Rule.parse("allow", "publish", "devices/${device.id}/#"),
            Rule.parse("deny", "publish", "devices/${device.id}/config")]),
            ts(brt.now()), replace=True)
    policy_changed(brt)
    add_role(brt, Role.build("gateway", [Rule.parse("allow", "publish", "devices/+/config")]))
    creds = tmp_path / "creds"
    gw = enroll(brt, "gw", creds, roles=("device", "gateway"))
    s1 = enroll(brt, "s1", creds)
    result = service.render(brt, broker_dir, service.BrokerOptions(
        port=port, broker_user=service.default_broker_user()))
    assert result.pattern_lines == 2 and result.user_blocks == 4
    layout = Layout.parse(broker_dir)
    with running(mosquitto, layout):
        def client(c: Creds) -> DeviceClient:
            return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", port, timeout=3)

        with client(gw) as g, client(s1) as s:
            for c, topic, allowed in ((g, "devices/gw/config", False),
                                      (g, "devices/s1/config", True),
                                      (g, "devices/gw/temp", True),
                                      (s, "devices/s1/config", False),
                                      (s, "devices/s1/temp", True),
                                      (s, "devices/gw/temp", False)):
                if allowed:
                    c.publish(topic, b"x")
                else:
                    with pytest.raises(MqttNotAuthorizedError):
                        c.publish(topic, b"x")


def test_sdk_reconnects_and_resubscribes_after_a_broker_restart(setup: Setup) -> None:
    inbox = Inbox()
    alice = setup.client(_creds(setup, "alice"), min_backoff=1, max_backoff=2)
    alice.connect()
    alice.subscribe("devices/alice/#", inbox)
    setup.broker.stop()
    assert wait_for(lambda: not alice.connected, 3)
    setup.broker.start()
    assert wait_for(lambda: alice.connected, 6)
    # The broker kept no session (clean start): the client subscribed again by itself.
    alice.publish("devices/alice/back", b"again")
    assert wait_for(lambda: any(m.payload == b"again" for m in inbox.messages), 3)
    alice.close()


def test_sdk_refused_connection_raises(setup: Setup) -> None:
    victim = enroll(setup.rt, "ivan", setup.creds)
    revoke(setup.rt, victim.serial)
    setup.sync()
    with pytest.raises(MqttConnectError):
        setup.client(victim).connect(timeout=3)


def test_a_reload_the_broker_does_not_confirm_is_rolled_back(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    before = service.current_generation(setup.layout)
    real = service.confirm
    calls = []

    def flaky(layout: Layout, options: service.BrokerOptions, **kw: float) -> None:
        calls.append(service.current_generation(layout))
        if len(calls) == 1:
            raise BrokerReloadError("the broker is not enforcing its ACL (simulated)")
        real(layout, options, **kw)

    monkeypatch.setattr(service, "confirm", flaky)
    with pytest.raises(BrokerReloadError, match=f"rolled back to generation {before}"):
        setup.sync()
    assert calls == [(before or 0) + 1, before]
    assert service.current_generation(setup.layout) == before
    assert not setup.layout.generation((before or 0) + 1).exists()
    with setup.client(_creds(setup, "alice")) as alice:
        alice.publish("devices/alice/ok", b"still served")


def test_sdk_reloads_renewed_files_and_reconnects(setup: Setup) -> None:
    """After the renewal agent replaced the files (here: a renewal issued in the service
    layer, written as the agent writes them), :meth:`DeviceClient.reload` reconnects with
    the new pair and renews the subscriptions; a pair for another device is refused and
    changes nothing."""
    creds = enroll(setup.rt, "judy", setup.creds)
    # A reload reconnects: more time than the other tests give a CONNACK, for busy hosts.
    client = DeviceClient.from_files(creds.cert, creds.key, creds.ca, "127.0.0.1",
                                     setup.port, timeout=10.0)
    client.connect()
    inbox = Inbox()
    client.subscribe("devices/judy/#", inbox)
    old_serial = client.serial
    key = ec.generate_private_key(ec.SECP256R1())
    record = renew(setup.rt, old_serial, make_csr(key), grace=timedelta(days=1))
    creds.key.write_bytes(key_pem(key))
    creds.cert.write_text(record.pem)
    client.reload()
    assert client.serial == record.serial != old_serial and client.connected
    client.publish("devices/judy/renewed", b"yes")
    assert inbox.event.wait(10) and inbox.messages[-1].payload == b"yes"
    bob = _creds(setup, "bob")
    creds.cert.write_bytes(bob.cert.read_bytes())
    with pytest.raises(InvalidInputError, match="another device"):
        client.reload()
    assert client.serial == record.serial and client.connected
    client.close()
