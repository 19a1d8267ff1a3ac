"""The iotsec device SDK: MQTT 5 with mutual TLS to the broker iotsec drives.

See :mod:`iotsec.broker.client` for what it does; this module is its public name::

    from iotsec.device import DeviceClient
"""

from __future__ import annotations

from iotsec.broker.client import DeviceClient, Handler, Message
from iotsec.errors import MqttConnectError, MqttError, MqttNotAuthorizedError, MqttTimeoutError

__all__ = ["DeviceClient", "Handler", "Message", "MqttConnectError", "MqttError",
           "MqttNotAuthorizedError", "MqttTimeoutError"]
