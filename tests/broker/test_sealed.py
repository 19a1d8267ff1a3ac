"""End-to-end protected messages through the real Mosquitto: what the broker carries is a
COSE message bound to its topic; what the handler gets is the plaintext, and only when it
opens (not tampered, not replayed, not moved to another topic)."""

from __future__ import annotations

import threading

import pytest

from iotsec.device import Keyring, Message, SealedChannel, SealedMessage, Sender
from iotsec.errors import (
    InvalidInputError,
    PayloadAuthenticationError,
    PayloadError,
    PayloadReplayError,
)
from iotsec.protect.pairing import establish, new_salt
from iotsec.protect.payload import parse
from tests.broker.test_integration import Inbox, Setup, _creds
from tests.broker.test_integration import setup as setup
from tests.protect.support import agreement_key


class Collected:
    def __init__(self) -> None:
        self.opened: list[SealedMessage] = []
        self.rejected: list[tuple[str, PayloadError]] = []
        self.event = threading.Event()

    def __call__(self, message: SealedMessage) -> None:
        self.opened.append(message)
        self.event.set()

    def reject(self, message: Message, exc: PayloadError) -> None:
        self.rejected.append((message.topic, exc))
        self.event.set()


def _pair() -> tuple[Sender, Keyring]:
    device_key, app_key = agreement_key("x25519"), agreement_key("x25519")
    salt = new_salt()
    device = establish(device_key, app_key.public_key(), own_id="alice", peer_id="app",
                       salt=salt)
    app = establish(app_key, device_key.public_key(), own_id="app", peer_id="alice", salt=salt)
    return Sender(device.send), Keyring([app.receive])


def test_sealed_telemetry_crosses_the_broker_encrypted(setup: Setup) -> None:
    sender, keyring = _pair()
    seen_raw, got = Inbox(), Collected()
    with setup.client(_creds(setup, "alice")) as alice:
        alice.subscribe("devices/alice/raw/#", seen_raw)
        channel = SealedChannel(alice, sender=sender, keys=keyring, on_reject=got.reject)
        channel.subscribe("devices/alice/telemetry", got)
        channel.publish("devices/alice/telemetry", b'{"t": 21.5}')
        assert got.event.wait(3)
        assert [(m.topic, m.payload, m.sender_id, m.seq) for m in got.opened] == [
            ("devices/alice/telemetry", b'{"t": 21.5}', "alice", 0)]
        # What the broker carried: a COSE_Encrypt0, not the plaintext.
        sealed = sender.seal(b'{"t": 22.0}', external_aad=b"devices/alice/raw/x")
        alice.publish("devices/alice/raw/x", sealed)
        assert seen_raw.event.wait(3)
        carried = seen_raw.messages[0].payload
        assert b"22.0" not in carried
        assert parse(carried).kind == "encrypt0"


def test_tampered_replayed_and_moved_messages_never_reach_the_handler(
        setup: Setup) -> None:
    sender, keyring = _pair()
    got = Collected()
    with setup.client(_creds(setup, "alice")) as alice:
        channel = SealedChannel(alice, keys=keyring, on_reject=got.reject)
        channel.subscribe("devices/alice/#", got)

        def send(topic: str, payload: bytes) -> None:
            # Published as raw bytes: what a forger on the path would inject.
            got.event.clear()
            alice.publish(topic, payload)
            assert got.event.wait(3)

        good = sender.seal(b"ok", external_aad=b"devices/alice/a")
        send("devices/alice/a", good)
        send("devices/alice/a", good)                      # replayed
        moved = sender.seal(b"moved", external_aad=b"devices/alice/a")
        send("devices/alice/b", moved)                     # re-published elsewhere
        tampered = bytearray(sender.seal(b"x", external_aad=b"devices/alice/a"))
        tampered[-1] ^= 1
        send("devices/alice/a", bytes(tampered))
        send("devices/alice/a", b"plain text")             # not COSE at all
    assert [m.payload for m in got.opened] == [b"ok"]
    reasons = [type(exc) for _, exc in got.rejected]
    assert reasons[0] is PayloadReplayError
    assert reasons[1] is PayloadAuthenticationError
    assert reasons[2] is PayloadAuthenticationError
    assert issubclass(reasons[3], PayloadError)
    assert len(reasons) == 4


def test_a_channel_without_keys_refuses_clearly(setup: Setup) -> None:
    with setup.client(_creds(setup, "alice")) as alice:
        channel = SealedChannel(alice)
        with pytest.raises(InvalidInputError, match="no sealing key"):
            channel.publish("devices/alice/t", b"x")
        with pytest.raises(InvalidInputError, match="no opening keys"):
            channel.subscribe("devices/alice/#", Collected())

