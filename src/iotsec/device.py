"""The iotsec device SDK: enrolment and renewal over EST, MQTT 5 with mutual TLS to the
broker iotsec drives, end-to-end protected messages on top of it, and CoAP over DTLS to
the CoAP gateway for constrained devices.

See :mod:`iotsec.sdk.agent`, :mod:`iotsec.sdk.est`, :mod:`iotsec.sdk.mqtt` and
:mod:`iotsec.sdk.sealed` for what they do; this module is their public name::

    from iotsec.device import DeviceClient, RenewalAgent, SealedChannel, enrol

Nothing here needs an operator credential: a device enrols with a bootstrap secret or a
claim certificate, and renews with its own certificate.
"""

from __future__ import annotations

from iotsec.errors import (
    CoapClientError,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    EnrolmentPending,
    EstError,
    MqttConnectError,
    MqttError,
    MqttNotAuthorizedError,
    MqttTimeoutError,
)
from iotsec.protect.payload import Keyring, Sender
from iotsec.protect.replay import ReplayWindows
from iotsec.sdk.agent import AgentStatus, DeviceCertificate, RenewalAgent, enrol
from iotsec.sdk.coap import CoapClient
from iotsec.sdk.est import EstClient, ServerKey
from iotsec.sdk.mqtt import DeviceClient, Handler, Message
from iotsec.sdk.sealed import SealedChannel, SealedHandler, SealedMessage

__all__ = ["AgentStatus", "CoapClient", "CoapClientError", "DeviceCertificate", "DeviceClient",
           "EnrolmentAuthError",
           "EnrolmentForbiddenError", "EnrolmentPending", "EstClient", "EstError", "Handler",
           "Keyring", "Message", "MqttConnectError", "MqttError", "MqttNotAuthorizedError",
           "MqttTimeoutError", "RenewalAgent", "ReplayWindows", "SealedChannel",
           "SealedHandler", "SealedMessage", "Sender", "ServerKey", "enrol"]
