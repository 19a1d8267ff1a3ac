"""Wire model of the CoAP gateway's start (``iotsec gateway coap --json``)."""

from __future__ import annotations

from iotsec.app.wire.base import Wire

__all__ = ["GatewayListeningOut"]


class GatewayListeningOut(Wire):
    """Where the gateway listens and which broker it bridges to."""

    protocol: str
    bind: str
    port: int
    mqtt_host: str
    mqtt_port: int
