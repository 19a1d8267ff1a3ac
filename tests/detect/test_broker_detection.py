"""Detection from a real Mosquitto's own log: clients without a certificate, one
certificate used from two addresses at once, and a device probing topics it may not use
(disabled by its rule's action)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iotsec.app.broker import mosquitto as service
from iotsec.app.detect.loop import Leader
from iotsec.app.detect.rules import apply_rules
from iotsec.app.events import list_events
from iotsec.app.identity.devices import get_device
from iotsec.app.monitor.alerts import list_alerts
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.identity.registry import DeviceState
from tests.broker.support import Broker, Creds, enroll, mqtt_tls_connect, running, wait_for

RULES = b"""\
rules:
  - {name: no-cert, kind: authn-failures, per: source, window: 3600, threshold: 2}
  - {name: clone, kind: certificate-two-places, severity: critical}
  - {name: probing, kind: authz-denials, per: device, window: 3600, threshold: 2,
     action: disable}
"""


@dataclass
class Setup:
    rt: Runtime
    layout: Layout
    broker: Broker
    port: int
    alice: Creds


@pytest.fixture
def setup(brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path
          ) -> Iterator[Setup]:
    alice = enroll(brt, "alice", tmp_path / "creds")
    service.render(brt, broker_dir, service.BrokerOptions(
        port=port, broker_user=service.default_broker_user()))
    layout = Layout.parse(broker_dir)
    with running(mosquitto, layout) as broker:
        yield Setup(brt, layout, broker, port, alice)


def _client(s: Setup, bind: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5,
                         reconnect_on_failure=False)
    ctx = ssl.create_default_context(cafile=str(s.alice.ca))
    ctx.load_cert_chain(str(s.alice.cert), str(s.alice.key))
    client.tls_set_context(ctx)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", s.port, bind_address=bind)
    client.loop_start()
    assert connected.wait(3)
    return client


def test_a_real_broker_log_is_followed(setup: Setup) -> None:
    rt, log = setup.rt, setup.layout.log_file
    apply_rules(rt, RULES)
    leader = Leader(rt, log_file=log, checks=False)
    while leader.once():
        pass
    for _ in range(3):
        assert mqtt_tls_connect(setup.port, setup.alice.ca).startswith("failed")
    # alice's certificate from a second loopback address while the first session is open
    # (the broker gives both the certificate's name as client id: the second takes over).
    here, there = _client(setup, "127.0.0.1"), _client(setup, "127.0.0.2")
    for _ in range(3):
        there.publish("devices/bob/secret", b"x", qos=0)
    assert wait_for(lambda: log.read_text().count("Denied PUBLISH from") >= 3, 5), \
        log.read_text()[-3000:]

    def raised() -> bool:
        leader.once()
        return {"no-cert", "clone", "probing"} <= {a.rule for a in list_alerts(rt)}

    assert wait_for(raised, 10), [a.rule for a in list_alerts(rt)]
    alerts = {a.rule: a for a in list_alerts(rt)}
    assert alerts["no-cert"].subject == "source:127.0.0.1"
    assert alerts["clone"].evidence["addresses"] == ["127.0.0.1", "127.0.0.2"]
    assert alerts["probing"].subject == "device:alice"
    assert get_device(rt, "alice").state is DeviceState.DISABLED
    assert list_events(rt.engine, kind="device.state", actor="detector:probing")
    for c in (here, there):
        c.disconnect()
        c.loop_stop()
    leader.stop()
