"""The gateway's OSCORE listener: aiocoap as the device (its own OSCORE implementation, a
context derived from pair keys), a real Mosquitto on the MQTT side, a replay refused, and
the replay window kept across a restart of the gateway."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiocoap
import aiocoap.oscore
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.app.coap.oscore_contexts import (
    OscoreContexts,
    ProvisionedContext,
    edhoc_credential,
    provision_context,
    remove_context,
)
from iotsec.app.coap.oscore_endpoint import OscoreEndpoint
from iotsec.app.events import list_events
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.coap import oscore as o
from iotsec.coap.message import Code, Message, MessageType, Option, parse_message
from iotsec.device import DeviceClient
from iotsec.errors import ConflictError, PayloadKeyError
from iotsec.identity.registry import DeviceState
from iotsec.protect.pairing import load_public_key
from tests.broker.support import Creds, Inbox, wait_for
from tests.coap.conftest import Fleet
from tests.coap.support import edhoc_client_credentials, edhoc_posts, gateway
from tests.coap.test_oscore import aiocoap_context


def _device_key() -> tuple[x25519.X25519PrivateKey, bytes]:
    key = x25519.X25519PrivateKey.generate()
    return key, key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def _derive(key: x25519.X25519PrivateKey, ctx: ProvisionedContext) -> o.SecurityContext:
    """What the device does with the provisioning output."""
    gateway_public = load_public_key(ctx.gateway_public_pem.encode())
    assert isinstance(gateway_public, x25519.X25519PublicKey)
    return o.pair_context(key, gateway_public, own_is_device=True, device_id=ctx.device_id,
                          gateway_id=ctx.gateway_id, salt=ctx.salt,
                          sender_id=ctx.device_sender_id, recipient_id=ctx.gateway_sender_id)


def _secret(key: x25519.X25519PrivateKey, ctx: ProvisionedContext) -> bytes:
    """The master secret, as a device hands it to aiocoap."""
    gateway_public = load_public_key(ctx.gateway_public_pem.encode())
    assert isinstance(gateway_public, x25519.X25519PublicKey)
    own = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    peer = gateway_public.public_bytes(serialization.Encoding.Raw,
                                       serialization.PublicFormat.Raw)
    return o.master_secret(key.exchange(gateway_public), ctx.salt,
                           (ctx.device_id.encode(), own), (ctx.gateway_id.encode(), peer))


def _mqtt(fleet: Fleet, c: Creds) -> DeviceClient:
    return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", fleet.mqtt_port,
                                   timeout=5.0)


def _exchange(address: tuple[str, int], datagram: bytes,
              sock: socket.socket | None = None) -> Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as own:
        use = sock or own
        use.settimeout(5)
        use.sendto(datagram, address)
        return parse_message(use.recv(2048))


def _post(mid: int, topic: str, payload: bytes) -> Message:
    path = tuple((Option.URI_PATH, level.encode()) for level in ["ps", *topic.split("/")])
    return Message(MessageType.CON, Code.POST, mid, b"tk", path, payload)


def _with_mid(message: Message, mid: int) -> Message:
    return Message(message.type, message.code, mid, message.token, message.options,
                   message.payload)


def test_aiocoap_publishes_through_oscore(fleet: Fleet, tmp_path: Path) -> None:
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "alice", public)
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
            _mqtt(fleet, fleet.alice) as mqtt:
        assert gw.oscore is not None
        host, port = gw.oscore
        mqtt.subscribe("devices/alice/#", inbox)

        async def run() -> list[tuple[str, bytes]]:
            client = await aiocoap.Context.create_client_context()
            client.client_credentials[f"coap://{host}:{port}/*"] = aiocoap_context(
                tmp_path / "alice", sender=ctx.device_sender_id,
                recipient=ctx.gateway_sender_id, secret=_secret(key, ctx), salt=ctx.salt)
            answers = []
            try:
                for topic in ("devices/alice/temp", "devices/bob/temp"):
                    response = await client.request(aiocoap.Message(
                        code=aiocoap.POST, uri=f"coap://{host}:{port}/ps/{topic}",
                        payload=b"21.5")).response
                    answers.append((str(response.code), response.payload))
            finally:
                await client.shutdown()
            return answers

        answers = asyncio.run(run())
        assert inbox.event.wait(5), answers
    # The first is verified by aiocoap as protected 2.04; another device's topic 4.03.
    assert answers[0][0].startswith("2.04"), answers
    assert answers[1][0].startswith("4.03"), answers
    assert [(m.topic, m.payload) for m in inbox.messages] == [("devices/alice/temp", b"21.5")]
    denied = [e for e in list_events(fleet.rt.engine, kind="coap.request")
              if e.outcome == "denied"]
    assert any(e.actor == "alice" and e.subject == "devices/bob/temp" for e in denied)


def test_a_replay_is_refused_even_after_a_restart(fleet: Fleet) -> None:
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "bob", public)
    device = _derive(key, ctx)
    first, rid = o.protect_request(device, _post(10, "devices/bob/x", b"1"), 0)
    later, _ = o.protect_request(device, _post(11, "devices/bob/x", b"2"), 5)
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw:
        assert gw.oscore is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            answer = _exchange(gw.oscore, first.encode(), sock)
            assert o.unprotect_response(device, rid, answer).code == Code.CHANGED
            # A retransmission (same message id, same peer) is answered from the cache.
            assert _exchange(gw.oscore, first.encode(), sock) == answer
        replayed = _exchange(gw.oscore, _with_mid(first, 12).encode())
        assert replayed.code == Code.UNAUTHORIZED and replayed.payload == b"Replay detected"
        assert _exchange(gw.oscore, later.encode()).code == Code.CHANGED
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw:
        assert gw.oscore is not None
        for old in (first, later):
            again = _exchange(gw.oscore, old.encode())
            assert again.code == Code.UNAUTHORIZED and again.payload == b"Replay detected"
        # Out of order but inside the window, never seen: accepted.
        fresh, fresh_rid = o.protect_request(device, _post(13, "devices/bob/x", b"3"), 3)
        assert o.unprotect_response(device, fresh_rid,
                                    _exchange(gw.oscore, fresh.encode())).code == Code.CHANGED
    replays = [e for e in list_events(fleet.rt.engine, kind="coap.request")
               if e.outcome == "denied" and "replay" in str(e.detail)]
    assert len(replays) == 3


def test_unprotected_unknown_and_disabled_are_refused(fleet: Fleet) -> None:
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "bob", public)
    device = _derive(key, ctx)
    stranger = o.SecurityContext(b"\x01" * 16, ctx.salt, sender_id=b"\x09\x09\x09\x09",
                                 recipient_id=b"\x00")
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw:
        assert gw.oscore is not None
        plain = _exchange(gw.oscore, _post(1, "devices/bob/x", b"1").encode())
        assert plain.code == Code.UNAUTHORIZED and plain.first(Option.OSCORE) is None
        unknown, _ = o.protect_request(stranger, _post(2, "devices/bob/x", b"1"), 0)
        assert _exchange(gw.oscore, unknown.encode()).code == Code.UNAUTHORIZED
        # A context of the right kid with the wrong keys does not decrypt: 4.00.
        forged = o.SecurityContext(b"\x02" * 16, ctx.salt, sender_id=ctx.device_sender_id,
                                   recipient_id=b"\x00")
        bad, _ = o.protect_request(forged, _post(3, "devices/bob/x", b"1"), 0)
        assert _exchange(gw.oscore, bad.encode()).code == Code.BAD_REQUEST
        # Its sequence number 0 was not spent by the forgery.
        ok, rid = o.protect_request(device, _post(4, "devices/bob/x", b"1"), 0)
        assert o.unprotect_response(device, rid,
                                    _exchange(gw.oscore, ok.encode())).code == Code.CHANGED
        change_state(fleet.rt, "bob", DeviceState.DISABLED)
        off, rid = o.protect_request(device, _post(5, "devices/bob/x", b"1"), 1)
        assert o.unprotect_response(device, rid,
                                    _exchange(gw.oscore, off.encode())).code == Code.FORBIDDEN
        # A removed context stops at once, though the gateway had it in memory.
        change_state(fleet.rt, "bob", DeviceState.ACTIVE)
        remove_context(fleet.rt, "bob")
        gone, _ = o.protect_request(device, _post(6, "devices/bob/x", b"1"), 2)
        assert _exchange(gw.oscore, gone.encode()).code == Code.UNAUTHORIZED


def test_provisioning_refuses_bad_input(fleet: Fleet) -> None:
    _, public = _device_key()
    provision_context(fleet.rt, "alice", public)
    with pytest.raises(ConflictError):
        provision_context(fleet.rt, "alice", public)
    again = provision_context(fleet.rt, "alice", public, replace=True)
    assert len(again.device_sender_id) == 4
    with pytest.raises(PayloadKeyError):
        provision_context(fleet.rt, "bob", b"not a key")


def test_edhoc_with_the_device_certificate_key(fleet: Fleet) -> None:
    gateway_credential = edhoc_credential(fleet.rt)
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
            _mqtt(fleet, fleet.alice) as mqtt:
        assert gw.oscore is not None
        mqtt.subscribe("devices/alice/#", inbox)

        # A key that is no device's certificate key: EDHOC fails (4.01, unprotected, so
        # aiocoap raises), nothing is published.
        stranger = Creds("alice", fleet.bob.cert, fleet.bob.key, fleet.bob.ca,
                         fleet.bob.serial)
        with pytest.raises(aiocoap.oscore.NotAProtectedMessage):
            edhoc_posts(gw.oscore, edhoc_client_credentials(stranger, gateway_credential),
                        ["devices/alice/c"])
        # (aiocoap 0.4.17 runs EDHOC again for every request: each is a new session.)
        codes = edhoc_posts(gw.oscore, edhoc_client_credentials(fleet.alice, gateway_credential),
                            ["devices/alice/a", "devices/alice/b", "devices/bob/a"])
        assert codes == ["2.04", "2.04", "4.03"], codes
        assert wait_for(lambda: len(inbox.messages) == 2, 5)
        # After the certificate is revoked, its key no longer establishes a context.
        revoke(fleet.rt, fleet.alice.serial)
        with pytest.raises(aiocoap.oscore.NotAProtectedMessage):
            edhoc_posts(gw.oscore, edhoc_client_credentials(fleet.alice, gateway_credential),
                        ["devices/alice/e"])
    events = [e for e in list_events(fleet.rt.engine, kind="coap.request")
              if e.outcome == "denied"]
    assert any("no valid certificate" in str(e.detail) for e in events), events
    assert sorted(m.topic for m in inbox.messages) == ["devices/alice/a", "devices/alice/b"]


def test_an_edhoc_context_stops_when_its_certificate_is_revoked(fleet: Fleet) -> None:
    """A device that keeps its EDHOC context (lakers as the initiator, iotsec's OSCORE):
    the certificate's standing is read on every request, so a revocation stops it."""
    import lakers

    from iotsec.coap.edhoc import ccs

    gateway_credential = edhoc_credential(fleet.rt)
    key = serialization.load_pem_private_key(fleet.bob.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    own = ccs(key.public_key(), "bob", b"\x01")
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw:
        assert gw.oscore is not None
        initiator = lakers.EdhocInitiator()
        message_1 = initiator.prepare_message_1(b"\x05", [])
        first = Message(MessageType.CON, Code.POST, 1, b"e1",
                        ((Option.URI_PATH, b".well-known"), (Option.URI_PATH, b"edhoc")),
                        b"\xf5" + bytes(message_1))
        answer = _exchange(gw.oscore, first.encode())
        assert answer.code == Code.CHANGED, answer
        c_r, _, _ = initiator.parse_message_2(answer.payload)
        initiator.verify_message_2(
            key.private_numbers().private_value.to_bytes(32, "big"), own, gateway_credential)
        message_3 = bytes(initiator.prepare_message_3(lakers.CredentialTransfer.ByValue, [])[0])
        initiator.completed_without_message_4()
        device = o.SecurityContext(bytes(initiator.edhoc_exporter(0, [], 16)),
                                   bytes(initiator.edhoc_exporter(1, [], 8)),
                                   sender_id=bytes(c_r), recipient_id=b"\x05")

        def publish(mid: int, seq: int, combined: bool = False) -> int:
            protected, rid = o.protect_request(device, _post(mid, "devices/bob/x", b"1"), seq)
            if combined:
                protected = Message(protected.type, protected.code, mid, protected.token,
                                    (*protected.options, (Option.EDHOC, b"")),
                                    message_3 + protected.payload)
            reply = o.unprotect_response(device, rid,
                                         _exchange(gw.oscore, protected.encode()))
            return reply.code

        assert publish(2, 0, combined=True) == Code.CHANGED
        assert publish(3, 1) == Code.CHANGED
        revoke(fleet.rt, fleet.bob.serial)
        assert publish(4, 2) == Code.FORBIDDEN
        # The context is gone with the refusal.
        protected, _ = o.protect_request(device, _post(5, "devices/bob/x", b"1"), 3)
        assert _exchange(gw.oscore, protected.encode()).code == Code.UNAUTHORIZED


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.binary(max_size=12), st.booleans())
def test_malformed_datagrams_never_crash_the_oscore_endpoint(crt: Runtime, tail: bytes,
                                                             option: bytes, edhoc: bool
                                                             ) -> None:
    """Random datagrams, and well-formed CoAP carrying a random OSCORE option and payload
    (with or without the EDHOC option): an answer or nothing, never an exception."""
    endpoint = OscoreEndpoint(crt, OscoreContexts(crt), None)
    address = ("127.0.0.1", 40000)
    endpoint.received(tail, address)
    options: tuple[tuple[int, bytes], ...] = ((Option.OSCORE, option),)
    if edhoc:
        options += ((Option.EDHOC, b""),)
    for message in (Message(MessageType.CON, Code.POST, 7, b"t", options, tail or b"x"),
                    Message(MessageType.CON, Code.POST, 8, b"t",
                            ((Option.URI_PATH, b".well-known"), (Option.URI_PATH, b"edhoc")),
                            b"\xf5" + tail)):
        answer = endpoint.received(message.encode(), address)
        assert answer is not None
        assert parse_message(answer).code >= 0x80
