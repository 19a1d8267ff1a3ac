"""The CoAP gateway against real clients: libcoap's coap-client-openssl over DTLS 1.2 with
iotsec-issued certificates, and a real Mosquitto rendered by iotsec on the MQTT side."""

from __future__ import annotations

from iotsec.device import DeviceClient
from tests.broker.support import Creds, Inbox
from tests.coap.conftest import Fleet
from tests.coap.support import coap_client, gateway


def _creds(fleet: Fleet, device_id: str) -> Creds:
    cert = sorted(fleet.creds.glob(f"{device_id}-*.crt"))[-1]
    return Creds(device_id, cert, cert.with_suffix(".key"), fleet.creds / "ca.pem", "")


def _mqtt(fleet: Fleet, c: Creds) -> DeviceClient:
    return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", fleet.mqtt_port,
                                   timeout=5.0)


def test_coap_publish_reaches_an_mqtt_subscriber(fleet: Fleet, coap_client_bin: str) -> None:
    alice = _creds(fleet, "alice")
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, alice) as mqtt:
        mqtt.subscribe("devices/alice/#", inbox)
        answer = coap_client(coap_client_bin, f"{gw.url}/ps/devices/alice/temp",
                             method="post", payload="21.5", cert=alice.cert, key=alice.key,
                             ca=alice.ca)
        print(answer)
        assert inbox.event.wait(5), answer
    assert [(m.topic, m.payload) for m in inbox.messages] == [("devices/alice/temp", b"21.5")]
