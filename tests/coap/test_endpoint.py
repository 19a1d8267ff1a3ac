"""The DTLS endpoint under bad input and load limits: malformed datagrams inside and
outside a session never stop it, and the peer state it keeps is capped and evicted."""

from __future__ import annotations

import contextlib
import random
import socket
import time
import warnings

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*DSA.*")
    from OpenSSL import SSL

from iotsec.coap.message import Code, MessageType, parse_message
from iotsec.device import CoapClientError
from tests.coap.conftest import Fleet
from tests.coap.support import client, gateway


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
        device = client(gw.address, alice)
        try:
            device.connect()
            # Inside the session: a CoAP format error in a CON is answered with a Reset.
            device.send_datagram(b"\x40\x01\x00\x2a\xf1")
            reset = device.receive_datagram(3)
            assert reset is not None
            answer = parse_message(reset)
            assert (answer.type, answer.code, answer.mid) == (MessageType.RST, Code.EMPTY, 42)
            for _ in range(300):
                device.send_datagram(rng.randbytes(rng.randint(1, 1300)))
            while device.receive_datagram(0.3) is not None:  # drain the Resets and error replies
                pass
            ok = device.request(Code.POST, "ps/devices/alice/t", b"still here", timeout=3)
            assert ok is not None and ok.code == Code.CHANGED
        finally:
            device.close()


def test_peer_state_is_capped_and_idle_peers_are_evicted(fleet: Fleet) -> None:
    alice, bob = fleet.alice, fleet.bob
    with gateway(fleet.rt, fleet.mqtt_port, max_peers=1, idle_timeout=1.0) as gw:
        a = client(gw.address, alice)
        b = client(gw.address, bob, timeout=0.8)
        try:
            a.connect()
            with pytest.raises(CoapClientError, match="no DTLS handshake"):
                b.connect()  # the one place is taken
            time.sleep(1.6)  # a is silent past the idle timeout: evicted
            b2 = client(gw.address, bob)
            try:
                b2.connect()
                ok = b2.request(Code.POST, "ps/devices/bob/t", b"1", timeout=3)
                assert ok is not None and ok.code == Code.CHANGED
            finally:
                b2.close()
        finally:
            a.close()
            b.close()


def test_an_unfinished_handshake_is_dropped_after_its_timeout(fleet: Fleet) -> None:
    """A peer that returns the cookie and then goes silent holds its place only until the
    handshake timeout."""
    alice, bob = fleet.alice, fleet.bob
    with gateway(fleet.rt, fleet.mqtt_port, max_peers=1, handshake_timeout=1.0) as gw:
        stalled = client(gw.address, alice)
        stalled._sock.connect(gw.address)
        # ClientHello, HelloVerifyRequest, ClientHello with the cookie, the server's
        # flight: then nothing more from this client.
        deadline = time.monotonic() + 3
        for _ in range(2):
            with contextlib.suppress(SSL.WantReadError):
                stalled._conn.do_handshake()
            stalled._flush()
            stalled._pump(deadline)
        late = client(gw.address, bob, timeout=0.6)
        with pytest.raises(CoapClientError, match="no DTLS handshake"):
            late.connect()  # the stalled handshake holds the one place
        late.close()
        time.sleep(1.2)
        fresh = client(gw.address, bob)
        try:
            fresh.connect()
            fresh.publish("devices/bob/t", b"1")
        finally:
            fresh.close()
            stalled.close()
