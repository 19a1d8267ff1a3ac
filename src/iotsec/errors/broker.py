"""Errors: broker (Mosquitto) and the device MQTT client."""

from __future__ import annotations

from iotsec.errors.base import InvalidInputError, IotsecError

__all__ = [
    "BrokerConfigError", "BrokerCrlError", "BrokerError", "BrokerProcessError",
    "BrokerReloadError", "BrokerValidationError", "EmqxRequestError", "MqttConnectError",
    "MqttError", "MqttNotAuthorizedError", "MqttTimeoutError"
]


class BrokerError(IotsecError):
    """Driving the MQTT broker failed: rendering, validating, reloading or confirming it."""

    status = 502
    code = "broker"


class BrokerConfigError(BrokerError, InvalidInputError):
    """A broker setting that cannot be rendered (address, port, directory, names)."""

    status = 422
    code = "broker-config"
    default_hint = "check the options given to 'iotsec broker mosquitto render'"


class BrokerValidationError(BrokerError):
    """A new broker configuration, ACL or CRL was refused before anything was swapped in;
    the broker keeps running with the previous generation."""

    status = 422
    code = "broker-validation"
    default_hint = "nothing was changed on the broker; fix the cause and run the sync again"


class BrokerCrlError(BrokerValidationError):
    """The CRL for the broker is unreadable, not signed by the CA, older than the one the
    broker has, or too close to (or past) its nextUpdate."""

    code = "broker-crl"
    default_hint = ("nothing was changed on the broker; check the CA with 'iotsec crl' and run "
                    "the sync again")


class BrokerProcessError(BrokerError):
    """The process given is not a running Mosquitto broker, or cannot be signalled."""

    status = 503
    code = "broker-process"
    default_hint = "give the broker's --pid or --pidfile (and run as its user or root)"


class BrokerReloadError(BrokerError):
    """The broker did not confirm the new generation after a reload (not serving, or not
    enforcing its CRL or ACL); iotsec rolled back to the previous generation."""

    status = 503
    code = "broker-reload"
    default_hint = "read the broker's log (DIR/run/mosquitto.log) and run the sync again"


class MqttError(IotsecError):
    """The device MQTT client could not do what was asked."""

    status = 502
    code = "mqtt"


class MqttConnectError(MqttError):
    """The broker refused the connection (TLS handshake or CONNACK), or is unreachable."""

    code = "mqtt-connect"
    default_hint = ("check the host name and port, that the certificate is current and not "
                    "revoked, and that the device is enabled")


class MqttNotAuthorizedError(MqttError):
    """The broker refused a publish or a subscription (MQTT 5 reason code 0x87 and kin)."""

    status = 403
    code = "mqtt-not-authorized"
    default_hint = "the device's roles do not allow this topic; see 'iotsec authz check'"

    def __init__(self, message: str, *, reason_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason_code = reason_code


class MqttTimeoutError(MqttError):
    """The broker did not answer in time."""

    status = 504
    code = "mqtt-timeout"
    default_hint = "check that the broker is reachable and not overloaded"


class EmqxRequestError(BrokerError, InvalidInputError):
    """A request from EMQX (HTTP authentication or authorization) is malformed: not JSON,
    too large, a field missing or of the wrong type, an unknown action or a bad topic. The
    EMQX endpoints answer it with an explicit deny, never with an error status."""

    status = 422
    code = "emqx-request"
    default_hint = ("render the EMQX configuration with 'iotsec broker emqx render' so that "
                    "the request body has the fields iotsec reads")
