"""Wire model of the CoAP gateway's start (``iotsec gateway coap --json``)."""

from __future__ import annotations

from iotsec.app.wire.base import Wire

__all__ = ["GatewayListeningOut", "OscoreContextOut"]


class GatewayListeningOut(Wire):
    """Where the gateway listens and which broker it bridges to."""

    protocol: str
    bind: str
    port: int
    mqtt_host: str
    mqtt_port: int
    oscore_bind: str | None = None
    oscore_port: int | None = None


class OscoreContextOut(Wire):
    """What a device needs to derive its OSCORE context with the gateway (nothing secret):
    the gateway's agreement public key, the salt and both Sender IDs. The device computes
    the master secret from its own private key (ECDH + HKDF)."""

    device_id: str
    gateway_id: str
    gateway_public_key: str
    key_type: str
    salt: str
    device_sender_id: str
    gateway_sender_id: str
    algorithm: str
    kdf: str
