"""OSCORE (RFC 8613) protection: the RFC's own test vectors, a bounded fuzz of the OSCORE
option parser and of request verification, and aiocoap's OSCORE server as the peer of
iotsec's protection."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import aiocoap
import aiocoap.credentials
import aiocoap.oscore as aiocoap_oscore
import pytest
from aiocoap import resource
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.coap import oscore as o
from iotsec.coap.message import Code, Message, MessageType, Option, parse_message
from iotsec.errors import OscoreError, PayloadKeyError

# RFC 8613 Appendix C.1.1 (client) and C.4 / C.7 (a request and its response).
_SECRET = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
_SALT = bytes.fromhex("9e7ca92223786340")
_REQUEST = bytes.fromhex("44015d1f00003974396c6f63616c686f737483747631")
_PROTECTED_REQUEST = bytes.fromhex(
    "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e")
_RESPONSE = bytes.fromhex("64455d1f00003974ff48656c6c6f20576f726c6421")
_PROTECTED_RESPONSE = bytes.fromhex(
    "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106")


def _client() -> o.SecurityContext:
    return o.SecurityContext(_SECRET, _SALT, sender_id=b"", recipient_id=b"\x01")


def _server() -> o.SecurityContext:
    return o.SecurityContext(_SECRET, _SALT, sender_id=b"\x01", recipient_id=b"")


def test_the_rfc_8613_test_vectors() -> None:
    client, server = _client(), _server()
    assert client.common_iv.hex() == "4622d4dd6d944168eefb54987c"
    assert client.nonce(b"", b"\x14").hex() == "4622d4dd6d944168eefb549868"
    protected, request = o.protect_request(client, parse_message(_REQUEST), 20)
    assert protected.encode() == _PROTECTED_REQUEST
    verified = o.unprotect_request(server, parse_message(_PROTECTED_REQUEST))
    assert verified.seq == 20 and verified.request == o.RequestId(b"", b"\x14")
    assert verified.message.encode() == _REQUEST
    response = o.protect_response(server, verified.request, parse_message(_RESPONSE))
    assert response.encode() == _PROTECTED_RESPONSE
    opened = o.unprotect_response(client, request, parse_message(_PROTECTED_RESPONSE))
    assert opened.encode() == _RESPONSE


def test_an_altered_or_misdirected_request_does_not_verify() -> None:
    raw = bytearray(_PROTECTED_REQUEST)
    raw[-1] ^= 1
    with pytest.raises(OscoreError) as bad:
        o.unprotect_request(_server(), parse_message(bytes(raw)))
    assert bad.value.coap_code == Code.BAD_REQUEST
    other = o.SecurityContext(_SECRET, _SALT, sender_id=b"\x02", recipient_id=b"\x03")
    with pytest.raises(OscoreError) as wrong:
        o.unprotect_request(other, parse_message(_PROTECTED_REQUEST))
    assert wrong.value.coap_code == Code.UNAUTHORIZED
    # The same request bound to another Partial IV (an attacker rewriting the option).
    moved = _PROTECTED_REQUEST.replace(bytes.fromhex("620914"), bytes.fromhex("620915"))
    with pytest.raises(OscoreError):
        o.unprotect_request(_server(), parse_message(moved))


def test_a_response_is_bound_to_its_request() -> None:
    with pytest.raises(OscoreError):
        o.unprotect_response(_client(), o.RequestId(b"", b"\x15"),
                             parse_message(_PROTECTED_RESPONSE))


@pytest.mark.parametrize("value", [b"\x00", b"\x20", b"\x06" + bytes(6), b"\x03\x01",
                                   b"\x10", b"\x11\x00\x05ab", b"\x01\x00extra",
                                   b"\x08" + bytes(8), b"\x09" + bytes(o.MAX_OPTION)])
def test_the_option_parser_refuses_what_rfc_8613_does_not_allow(value: bytes) -> None:
    with pytest.raises(OscoreError):
        o.parse_option(value)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=o.MAX_OPTION + 8))
def test_the_option_parser_only_raises_oscore_errors(value: bytes) -> None:
    try:
        opt = o.parse_option(value)
    except OscoreError:
        return
    assert o.encode_option(opt) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5).filter(lambda b: b[:1] != b"\x00" or len(b) == 1),
       st.none() | st.binary(max_size=o.MAX_ID), st.none() | st.binary(max_size=40))
def test_an_encoded_option_parses_back(piv: bytes, kid: bytes | None,
                                       kid_context: bytes | None) -> None:
    opt = o.OscoreOption(piv, kid, kid_context)
    value = o.encode_option(opt)
    if not value:
        assert opt == o.OscoreOption(b"", None, None)
        return
    assert o.parse_option(value) == opt


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12), st.binary(max_size=300))
def test_a_forged_request_is_refused_with_an_oscore_error(option: bytes, payload: bytes
                                                          ) -> None:
    forged = Message(MessageType.CON, Code.POST, 1, b"t", ((Option.OSCORE, option),), payload)
    with pytest.raises(OscoreError):
        o.unprotect_request(_server(), parse_message(forged.encode()))


def test_both_sides_of_a_pair_derive_the_same_context() -> None:
    for device_key, gateway_key in (
            (x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()),
            (ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))):
        salt = os.urandom(16)
        device = o.pair_context(device_key, gateway_key.public_key(), own_is_device=True,
                                device_id="dev-1", gateway_id="gw", salt=salt,
                                sender_id=b"\x0a", recipient_id=b"\x00")
        gateway = o.pair_context(gateway_key, device_key.public_key(), own_is_device=False,
                                 device_id="dev-1", gateway_id="gw", salt=salt,
                                 sender_id=b"\x00", recipient_id=b"\x0a")
        request = Message(MessageType.CON, Code.POST, 7, b"k",
                          ((Option.URI_PATH, b"ps"), (Option.URI_PATH, b"t")), b"v")
        protected, _ = o.protect_request(device, request, 0)
        assert o.unprotect_request(gateway, protected).message == request
        # Another device identity gives another secret.
        stranger = o.pair_context(gateway_key, device_key.public_key(), own_is_device=False,
                                  device_id="dev-2", gateway_id="gw", salt=salt,
                                  sender_id=b"\x00", recipient_id=b"\x0a")
        with pytest.raises(OscoreError):
            o.unprotect_request(stranger, protected)
    with pytest.raises(PayloadKeyError):
        o.pair_context(x25519.X25519PrivateKey.generate(),
                       ec.generate_private_key(ec.SECP256R1()).public_key(),
                       own_is_device=True, device_id="d", gateway_id="g", salt=os.urandom(16),
                       sender_id=b"\x01", recipient_id=b"\x00")


def aiocoap_context(directory: Path, *, sender: bytes, recipient: bytes, secret: bytes,
                    salt: bytes) -> object:
    """An aiocoap OSCORE security context (its file format: settings.json)."""
    directory.mkdir(parents=True)
    (directory / "settings.json").write_text(json.dumps({
        "sender-id_hex": sender.hex(), "recipient-id_hex": recipient.hex(),
        "secret_hex": secret.hex(), "salt_hex": salt.hex()}))
    return aiocoap_oscore.FilesystemSecurityContext(str(directory))


def test_aiocoap_serves_a_request_iotsec_protected(tmp_path: Path) -> None:
    """iotsec protects the request and verifies the response; aiocoap's OSCORE server
    verifies the request, protects its answer, and refuses the same request replayed."""
    secret, salt = os.urandom(16), os.urandom(8)
    ours = o.SecurityContext(secret, salt, sender_id=b"\x05", recipient_id=b"\x06")
    seen: list[bytes] = []

    class Echo(resource.Resource):
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            seen.append(request.payload)
            return aiocoap.Message(code=aiocoap.CHANGED, payload=b"got " + request.payload)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def run() -> list[Message]:
        site = resource.Site()
        site.add_resource(["ps", "t"], Echo())
        credentials = aiocoap.credentials.CredentialsMap()
        credentials[":peer"] = aiocoap_context(tmp_path / "server", sender=b"\x06",
                                               recipient=b"\x05", secret=secret, salt=salt)
        server = await aiocoap.Context.create_server_context(
            OscoreSiteWrapper(site, credentials), bind=("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        answers: list[Message] = []
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            request = Message(MessageType.CON, Code.POST, 100, b"tk",
                              ((Option.URI_PATH, b"ps"), (Option.URI_PATH, b"t")), b"hello")
            protected, rid = o.protect_request(ours, request, 3)
            for mid in (100, 101):  # the second: the same request replayed (a new mid)
                replay = Message(protected.type, protected.code, mid, protected.token,
                                 protected.options, protected.payload)
                await loop.sock_sendall(sock, replay.encode())
                raw = await asyncio.wait_for(loop.sock_recv(sock, 2048), 5)
                answer = parse_message(raw)
                answers.append(o.unprotect_response(ours, rid, answer)
                               if answer.first(Option.OSCORE) is not None else answer)
            sock.close()
        finally:
            await server.shutdown()
        return answers

    first, replayed = asyncio.run(run())
    assert first.code == Code.CHANGED and first.payload == b"got hello"
    assert seen == [b"hello"]
    assert replayed.code == Code.UNAUTHORIZED, replayed
