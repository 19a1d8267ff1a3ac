"""End-to-end protected MQTT messages for the device SDK.

Mutual TLS protects a message between a device and the broker; the broker (and anything
behind it: bridges, rule engines, storage) still sees it in clear. A :class:`SealedChannel`
puts the payload API of :mod:`iotsec.protect.payload` on top of a
:class:`~iotsec.sdk.mqtt.DeviceClient`: what is published is a COSE message (encrypted
under a pair key, or signed), **bound to its topic** (the topic is the COSE external
associated data, so a message re-published to another topic does not open), with a
sequence number checked against a replay window on the receiving side::

    from iotsec.device import DeviceClient, SealedChannel

    channel = SealedChannel(client, sender=Sender(pair.send), keys=Keyring([pair.receive]))
    channel.subscribe("commands/dev1/#", lambda m: print(m.topic, m.payload, m.seq))
    channel.publish("devices/dev1/telemetry", b'{"t": 21.5}')

A received message that does not open (tampered, replayed, under an unknown key, sealed for
another topic) never reaches the handler: it goes to ``on_reject`` with the reason, or is
logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from iotsec.errors import InvalidInputError, PayloadError
from iotsec.protect.payload import Keyring, Opened, Sender
from iotsec.protect.payload import open as open_message
from iotsec.protect.replay import ReplayWindows
from iotsec.sdk.mqtt import DeviceClient, Message

__all__ = ["RejectHandler", "SealedChannel", "SealedHandler", "SealedMessage"]

log = logging.getLogger("iotsec.device")


@dataclass(frozen=True, slots=True)
class SealedMessage:
    """A received message that opened: the plaintext and who sealed it."""

    topic: str
    payload: bytes
    sender_id: str
    seq: int
    kid: bytes
    qos: int
    retain: bool


SealedHandler = Callable[[SealedMessage], None]
RejectHandler = Callable[[Message, PayloadError], None]


class SealedChannel:
    def __init__(self, client: DeviceClient, *, sender: Sender | None = None,
                 keys: Keyring | None = None, replay: ReplayWindows | None = None,
                 on_reject: RejectHandler | None = None) -> None:
        self.client = client
        self.sender = sender
        self.keys = keys
        self.replay = replay if replay is not None else ReplayWindows()
        self.on_reject = on_reject

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float | None = None) -> None:
        """Seal ``payload`` for ``topic`` and publish it (see ``DeviceClient.publish``)."""
        if self.sender is None:
            raise InvalidInputError("this channel has no sealing key",
                                    hint="give SealedChannel a sender=Sender(key)")
        sealed = self.sender.seal(bytes(payload), external_aad=topic.encode("utf-8"))
        self.client.publish(topic, sealed, qos=qos, retain=retain, timeout=timeout)

    def subscribe(self, topic_filter: str, handler: SealedHandler, *, qos: int = 1,
                  timeout: float | None = None) -> int:
        """Subscribe; ``handler`` receives only messages that open under the keyring."""
        keys = self.keys
        if keys is None:
            raise InvalidInputError("this channel has no opening keys",
                                    hint="give SealedChannel keys=Keyring([...])")

        def receive(message: Message) -> None:
            try:
                opened: Opened = open_message(message.payload, keys, self.replay,
                                              external_aad=message.topic.encode("utf-8"))
            except PayloadError as exc:
                if self.on_reject is not None:
                    self.on_reject(message, exc)
                else:
                    log.warning("dropped a message on %s: %s", message.topic, exc)
                return
            handler(SealedMessage(topic=message.topic, payload=opened.payload,
                                  sender_id=opened.sender_id, seq=opened.seq, kid=opened.kid,
                                  qos=message.qos, retain=message.retain))

        return self.client.subscribe(topic_filter, receive, qos=qos, timeout=timeout)
