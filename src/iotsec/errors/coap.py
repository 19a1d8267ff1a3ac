"""Errors: CoAP (RFC 7252) messages that cannot be parsed, and the CoAP gateway's setup."""

from __future__ import annotations

from iotsec.errors.base import InvalidInputError, IotsecError, MalformedInputError

__all__ = [
    "CoapClientError", "CoapGatewayError", "CoapMessageError", "CoapRequestError",
    "OscoreError", "OscoreReplayError"
]


class CoapMessageError(MalformedInputError):
    """A datagram that is not a CoAP message RFC 7252 allows, or one over the stated limits
    (message size, option count, option length)."""

    code = "coap-message"
    default_hint = "send a CoAP message (RFC 7252 section 3) of at most 1152 bytes"


class CoapGatewayError(IotsecError):
    """The CoAP gateway cannot start or serve: a bind address refused, the DTLS stack
    missing, the MQTT broker unreachable."""

    status = 409
    code = "coap-gateway"
    default_hint = ("check the bind address and port, and that the broker was rendered "
                    "with 'iotsec broker mosquitto render' and runs")


class CoapRequestError(InvalidInputError):
    """A well-formed CoAP request the gateway does not serve; ``coap_code`` is the response
    code it is answered with (4.00, 4.02, 4.04, 4.05)."""

    code = "coap-request"
    default_hint = ("publish with POST /ps/<topic>, observe with GET /ps/<topic> and "
                    "Observe: 0")

    def __init__(self, message: str, coap_code: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.coap_code = coap_code


class CoapClientError(IotsecError):
    """The device SDK's CoAP client could not reach the gateway: the DTLS handshake failed
    or timed out, the server's certificate does not name the host, the session closed."""

    status = 502
    code = "coap-client"
    default_hint = ("check the gateway's address, that the device's certificate is valid "
                    "and that the CA chain given is the fleet's")


class OscoreError(InvalidInputError):
    """An OSCORE-protected message (RFC 8613) that cannot be verified: a malformed OSCORE
    option, an unknown key id, a message that does not decrypt. ``coap_code`` is the
    (unprotected) response code RFC 8613 8.2 names: 4.02, 4.01 or 4.00."""

    code = "oscore"
    default_hint = ("provision the device's OSCORE context with 'iotsec coap oscore context' "
                    "and protect requests with it (RFC 8613)")

    def __init__(self, message: str, coap_code: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.coap_code = coap_code


class OscoreReplayError(OscoreError):
    """An OSCORE request whose sequence number was already accepted, or is older than the
    replay window (RFC 8613 7.4): answered 4.01."""

    code = "oscore-replay"
    default_hint = "a sender never reuses a sequence number; a replayed message is refused"
