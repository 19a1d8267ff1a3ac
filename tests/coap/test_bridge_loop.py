"""The MQTT bridge driven by the gateway's serving loop: no network thread of paho's, the
broker's connection restored after the broker restarts (CoAP publishes answered 5.03
meanwhile, observations subscribed again), against a real Mosquitto."""

from __future__ import annotations

import threading
import time

from iotsec.coap.message import Code, Option
from iotsec.device import CoapClient, DeviceClient
from tests.broker.support import Creds, Inbox
from tests.coap.conftest import Fleet
from tests.coap.support import client, gateway


def _mqtt(fleet: Fleet, c: Creds) -> DeviceClient:
    return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", fleet.mqtt_port,
                                   timeout=5.0)


def _publish_until(device: CoapClient, topic: str, payload: bytes, code: int,
                   seconds: float) -> int | None:
    """POST until the answer is ``code`` (or ``seconds`` pass); the last code seen."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        answer = device.request(Code.POST, f"ps/{topic}", payload, timeout=3)
        last = None if answer is None else answer.code
        if last == code:
            return last
        time.sleep(0.2)
    return last


def test_the_bridge_has_no_thread_of_its_own(fleet: Fleet) -> None:
    alice = fleet.alice
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, alice) as mqtt:
        mqtt.subscribe("devices/alice/#", inbox)
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if n.startswith("paho-mqtt-client-_iotsec")], names
        device = client(gw.address, alice)
        try:
            device.connect()
            for n in range(50):
                answer = device.request(Code.POST, "ps/devices/alice/t", b"%d" % n, timeout=3)
                assert answer is not None and answer.code == Code.CHANGED
        finally:
            device.close()
        deadline = time.monotonic() + 5
        while len(inbox.messages) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [m.payload for m in inbox.messages] == [b"%d" % n for n in range(50)]


def test_the_bridge_reconnects_after_the_broker_restarts(fleet: Fleet) -> None:
    alice = fleet.alice
    with gateway(fleet.rt, fleet.mqtt_port) as gw:
        device = client(gw.address, alice)
        try:
            device.connect()
            first = device.observe("commands/alice/led")
            assert first.first(Option.OBSERVE) is not None
            assert _publish_until(device, "devices/alice/t", b"before", Code.CHANGED, 5) \
                == Code.CHANGED
            fleet.broker.stop()
            # The broker is gone: a publish is answered 5.03, nothing is queued for later.
            assert _publish_until(device, "devices/alice/t", b"gone",
                                  Code.SERVICE_UNAVAILABLE, 10) == Code.SERVICE_UNAVAILABLE
            fleet.broker.start()
            # paho's delays: 1 s, then 2, 4... after each refused attempt.
            assert _publish_until(device, "devices/alice/t", b"after", Code.CHANGED, 30) \
                == Code.CHANGED
            inbox = Inbox()
            with _mqtt(fleet, alice) as mqtt, _mqtt(fleet, fleet.dash) as dash:
                mqtt.subscribe("devices/alice/#", inbox)
                device.publish("devices/alice/t", b"again")
                assert inbox.event.wait(5)
                assert [m.payload for m in inbox.messages] == [b"again"]
                # The observation's topic was subscribed again on the new connection.
                note = None
                for _ in range(40):
                    dash.publish("commands/alice/led", b"on")
                    note = device.notification(0.25)
                    if note is not None:
                        break
                assert note is not None, "no notification after the reconnection"
                assert (note.token, note.payload) == (first.token, b"on")
        finally:
            device.close()
