"""The CoAP gateway against real clients: libcoap's coap-client-openssl over DTLS 1.2 with
iotsec-issued certificates, a DTLS client that keeps its session across a revocation, and
a real Mosquitto rendered by iotsec on the MQTT side."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path

from iotsec.app.events import list_events
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.revocation import revoke
from iotsec.coap.message import Code, Option, code_text
from iotsec.device import CoapClientError, DeviceClient
from iotsec.identity.registry import DeviceState
from tests.broker.support import Creds, Inbox, foreign_ca_creds, wait_for
from tests.coap.conftest import Fleet
from tests.coap.support import Answer, client, coap_client, gateway


def _mqtt(fleet: Fleet, c: Creds) -> DeviceClient:
    return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", fleet.mqtt_port,
                                   timeout=5.0)


def _codes(answer: Answer) -> list[str]:
    """The response codes libcoap logged (``v:1 t:ACK c:2.04 ...``)."""
    return re.findall(r"t:(?:ACK|NON|CON) c:(\d\.\d\d)", answer.stdout + answer.stderr)


def _denials(fleet: Fleet, kind: str) -> list[str]:
    return [f"{e.actor} {e.subject} {e.detail}" for e in list_events(fleet.rt.engine, kind=kind)
            if e.outcome == "denied"]


def test_coap_publish_reaches_an_mqtt_subscriber(fleet: Fleet, coap_client_bin: str) -> None:
    alice = fleet.alice
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, alice) as mqtt:
        mqtt.subscribe("devices/alice/#", inbox)
        answer = coap_client(coap_client_bin, f"{gw.url}/ps/devices/alice/temp",
                             method="post", payload="21.5", cert=alice.cert, key=alice.key,
                             ca=alice.ca)
        assert _codes(answer) == ["2.04"], answer
        assert inbox.event.wait(5), answer
    assert [(m.topic, m.payload) for m in inbox.messages] == [("devices/alice/temp", b"21.5")]


def test_mqtt_publish_reaches_a_coap_observer(fleet: Fleet) -> None:
    alice = fleet.alice
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, fleet.dash) as mqtt:
        device = client(gw.address, alice)
        try:
            device.connect()
            first = device.observe("commands/alice/led")
            assert first.first(Option.OBSERVE) is not None
            # The gateway's MQTT subscription is made when the observation is registered;
            # a message published before its SUBACK may be missed, so publish until one
            # arrives.
            note = None
            for _ in range(20):
                mqtt.publish("commands/alice/led", b"on")
                note = device.notification(0.25)
                if note is not None:
                    break
            assert note is not None, "no notification"
            assert (note.code, note.token, note.payload) == (Code.CONTENT, first.token, b"on")
            assert note.first(Option.OBSERVE) is not None
        finally:
            device.close()


def test_refused_clients(fleet: Fleet, coap_client_bin: str, tmp_path: Path) -> None:
    alice, bob = fleet.alice, fleet.bob
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, alice) as mqtt:
        mqtt.subscribe("devices/alice/#", inbox)
        url = f"{gw.url}/ps/devices/alice/temp"
        # No client certificate: the handshake fails, nothing is answered.
        bare = coap_client(coap_client_bin, url, method="post", payload="x", ca=alice.ca)
        assert _codes(bare) == [], bare
        # A certificate from another CA, for the same device id.
        rogue = foreign_ca_creds("alice", tmp_path / "rogue", alice.ca)
        answer = coap_client(coap_client_bin, url, method="post", payload="x",
                             cert=rogue.cert, key=rogue.key, ca=alice.ca)
        assert _codes(answer) == [], answer
        # Another device's topic: 4.03 and an event.
        answer = coap_client(coap_client_bin, url, method="post", payload="forged",
                             cert=bob.cert, key=bob.key, ca=bob.ca)
        assert _codes(answer) == ["4.03"], answer
        assert wait_for(lambda: _denials(fleet, "coap.request"), 3)
        assert "bob devices/alice/temp" in _denials(fleet, "coap.request")[0]
        # Revoked: refused after the revocation, at the handshake.
        revoke(fleet.rt, alice.serial)
        answer = coap_client(coap_client_bin, url, method="post", payload="late",
                             cert=alice.cert, key=alice.key, ca=alice.ca)
        assert _codes(answer) == [], answer
        assert wait_for(lambda: _denials(fleet, "coap.connect"), 3)
        assert "is revoked" in _denials(fleet, "coap.connect")[0]
    assert inbox.messages == []


def test_disabled_or_revoked_after_the_handshake_is_refused_on_the_next_request(
        fleet: Fleet) -> None:
    alice, bob = fleet.alice, fleet.bob
    # The standing of each session is cached; a long delay shows that this process's
    # changes apply to the very next request all the same.
    fleet.rt.settings.hot_cache_seconds = 60
    with gateway(fleet.rt, fleet.mqtt_port) as gw:
        a = client(gw.address, alice)
        b = client(gw.address, bob)
        try:
            a.connect()
            b.connect()
            first = a.request(Code.POST, "ps/devices/alice/t", b"1", timeout=3)
            assert first is not None and code_text(first.code) == "2.04"
            b.publish("devices/bob/t", b"1")  # raises unless 2.04
            change_state(fleet.rt, "alice", DeviceState.DISABLED)
            revoke(fleet.rt, bob.serial)
            refused = a.request(Code.POST, "ps/devices/alice/t", b"2", timeout=3)
            assert refused is not None and refused.code == Code.FORBIDDEN
            assert b"disabled" in refused.payload
            refused = b.request(Code.POST, "ps/devices/bob/t", b"2", timeout=3)
            assert refused is not None and refused.code == Code.FORBIDDEN
            assert b"revoked" in refused.payload
            # The session is closed after the refusal.
            with contextlib.suppress(CoapClientError):
                assert a.request(Code.POST, "ps/devices/alice/t", b"3", timeout=3) is None
            assert a.closed
        finally:
            a.close()
            b.close()


def test_libcoap_observer_receives_what_an_mqtt_client_publishes(
        fleet: Fleet, coap_client_bin: str) -> None:
    alice = fleet.alice
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, fleet.dash) as mqtt:
        proc = subprocess.Popen(
            [coap_client_bin, "-s", "6", "-B", "8", "-c", str(alice.cert), "-j",
             str(alice.key), "-R", str(alice.ca), f"{gw.url}/ps/commands/alice/led"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(2)  # the observation is registered and the bridge subscribed
            for n in range(3):
                mqtt.publish("commands/alice/led", f"state-{n}".encode())
                time.sleep(0.2)
            out, err = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "state-0" in out and "state-2" in out, (out, err)


def test_a_body_larger_than_a_datagram_is_published_in_blocks(fleet: Fleet, coap_client_bin: str,
                                                              tmp_path: Path) -> None:
    """libcoap's client sends the body in Block1 blocks of 64 bytes (RFC 7959) and needs
    the gateway's 2.31 Continue to each but the last to go on; the whole body is published
    once."""
    alice = fleet.alice
    body = bytes(range(256)) * 12  # 3072 bytes: 48 blocks, more than one datagram
    (tmp_path / "body").write_bytes(body)
    (tmp_path / "huge").write_bytes(b"x" * (70 * 1024))
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, alice) as mqtt:
        mqtt.subscribe("devices/alice/#", inbox)
        answer = coap_client(coap_client_bin, f"{gw.url}/ps/devices/alice/blob", method="post",
                             cert=alice.cert, key=alice.key, ca=alice.ca, timeout=30,
                             extra=("-b", "64", "-f", str(tmp_path / "body")))
        # libcoap logs the first block and the final answer: 2.04 to block 47 of 64 bytes.
        assert "Block1:0/M/64" in answer.stdout, answer
        assert _codes(answer) == ["2.04"] and "Block1:47/_/64" in answer.stdout, answer
        assert inbox.event.wait(5), answer
        # Over the limit: refused with 4.13 (and nothing published).
        too_big = coap_client(coap_client_bin, f"{gw.url}/ps/devices/alice/huge",
                              method="post", cert=alice.cert, key=alice.key, ca=alice.ca,
                              timeout=60, extra=("-b", "1024", "-f", str(tmp_path / "huge")))
        assert "4.13" in _codes(too_big), too_big
        # Another device's topic: refused on the first block.
        denied = coap_client(coap_client_bin, f"{gw.url}/ps/devices/bob/blob", method="post",
                             cert=alice.cert, key=alice.key, ca=alice.ca, timeout=30,
                             extra=("-b", "64", "-f", str(tmp_path / "body")))
        assert _codes(denied) == ["4.03"], denied
        time.sleep(0.5)
    assert [(m.topic, m.payload) for m in inbox.messages] == [("devices/alice/blob", body)]


def test_a_large_notification_is_fetched_in_blocks(fleet: Fleet, coap_client_bin: str,
                                                   tmp_path: Path) -> None:
    """An MQTT message larger than a block reaches libcoap's observing client as Block2
    blocks of 64 bytes (RFC 7959 with RFC 7641): the first in the notification, the rest
    fetched with GET; libcoap prints the whole body."""
    body = b"".join(b"%04d," % i for i in range(300))  # 1500 bytes
    alice = fleet.alice
    received = tmp_path / "received"
    args = [coap_client_bin, "-s", "6", "-B", "8", "-b", "64", "-v", "6", "-o", str(received),
            "-c", str(alice.cert), "-j", str(alice.key), "-R", str(alice.ca)]
    with gateway(fleet.rt, fleet.mqtt_port) as gw, _mqtt(fleet, fleet.dash) as mqtt:
        proc = subprocess.Popen([*args, f"{gw.url}/ps/commands/alice/config"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # Published until the observation is registered (its SUBACK races the first).
            for _ in range(8):
                time.sleep(0.5)
                mqtt.publish("commands/alice/config", body)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert body in received.read_bytes(), received.read_bytes()[-300:]
    log = (out + err).decode("utf-8", "replace")
    # The notification carried block 0 of 24; libcoap fetched the others, the last is 23.
    assert re.search(r"c:2\.05 .*Block2:0/M/64", log), log[-2000:]
    assert re.search(r"c:2\.05 .*Block2:23/_/64", log), log[-2000:]
