"""The iotsec device SDK: MQTT 5 with mutual TLS to the broker iotsec drives, and
end-to-end protected messages on top of it.

See :mod:`iotsec.sdk.mqtt` and :mod:`iotsec.sdk.sealed` for what they do; this module
is their public name::

    from iotsec.device import DeviceClient, SealedChannel
"""

from __future__ import annotations

from iotsec.errors import MqttConnectError, MqttError, MqttNotAuthorizedError, MqttTimeoutError
from iotsec.protect.payload import Keyring, Sender
from iotsec.protect.replay import ReplayWindows
from iotsec.sdk.mqtt import DeviceClient, Handler, Message
from iotsec.sdk.sealed import SealedChannel, SealedHandler, SealedMessage

__all__ = ["DeviceClient", "Handler", "Keyring", "Message", "MqttConnectError", "MqttError",
           "MqttNotAuthorizedError", "MqttTimeoutError", "ReplayWindows", "SealedChannel",
           "SealedHandler", "SealedMessage", "Sender"]
