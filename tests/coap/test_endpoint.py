"""The DTLS endpoint under bad input and load limits: malformed datagrams inside and
outside a session never stop it, and the peer state it keeps is capped and evicted."""

from __future__ import annotations

import random
import socket
import time

import pytest

from iotsec.coap.message import Code, MessageType, parse_message
from tests.coap.conftest import Fleet
from tests.coap.dtls_client import DtlsClient
from tests.coap.support import gateway


def test_malformed_datagrams_never_stop_the_endpoint(fleet: Fleet) -> None:
    alice = fleet.alice
    rng = random.Random(20)
    with gateway(fleet.rt, fleet.mqtt_port) as gw:
        # Outside any session: garbage, truncated DTLS records, a record header claiming
        # more than it holds, from many source ports.
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                junk = rng.choice([
                    rng.randbytes(rng.randint(0, 1500)),
                    bytes([22, 0xFE, 0xFD]) + rng.randbytes(rng.randint(0, 40)),
                    bytes([22, 0xFE, 0xFD, 0, 0]) + b"\0" * 6 + b"\xff\xff" + b"\x01",
                ])
                s.sendto(junk, gw.address)
        client = DtlsClient(gw.address, alice.cert, alice.key, alice.ca)
        try:
            client.handshake()
            # Inside the session: a CoAP format error in a CON is answered with a Reset.
            client.send_raw(b"\x40\x01\x00\x2a\xf1")
            reset = client.receive()
            assert reset is not None
            answer = parse_message(reset)
            assert (answer.type, answer.code, answer.mid) == (MessageType.RST, Code.EMPTY, 42)
            for _ in range(300):
                client.send_raw(rng.randbytes(rng.randint(1, 1300)))
            while client.receive(0.3) is not None:  # drain the Resets and error replies
                pass
            ok = client.post("ps/devices/alice/t", b"still here")
            assert ok is not None and ok.code == Code.CHANGED
        finally:
            client.close()


def test_peer_state_is_capped_and_idle_peers_are_evicted(fleet: Fleet) -> None:
    alice, bob = fleet.alice, fleet.bob
    with gateway(fleet.rt, fleet.mqtt_port, max_peers=1, idle_timeout=1.0) as gw:
        a = DtlsClient(gw.address, alice.cert, alice.key, alice.ca)
        b = DtlsClient(gw.address, bob.cert, bob.key, bob.ca)
        try:
            a.handshake()
            with pytest.raises(TimeoutError):
                b.handshake(timeout=0.8)  # the one place is taken
            time.sleep(1.6)  # a is silent past the idle timeout: evicted
            b2 = DtlsClient(gw.address, bob.cert, bob.key, bob.ca)
            try:
                b2.handshake()
                ok = b2.post("ps/devices/bob/t", b"1")
                assert ok is not None and ok.code == Code.CHANGED
            finally:
                b2.close()
        finally:
            a.close()
            b.close()
