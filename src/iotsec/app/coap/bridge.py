"""The CoAP gateway's link to the MQTT broker: its own client certificate, and one MQTT 5
connection over mutual TLS that publishes what devices POST and subscribes to what they
observe.

The gateway is an iotsec identity of its own (CN ``_iotsec_gateway``, not a valid device
id, so no device can hold it): the broker's ACL grants it every topic (see
:mod:`iotsec.broker.acl`) because the gateway has already decided each request with the
device's roles before it reaches the broker. Its certificate is recorded in the store like
iotsec's other certificates (kind ``coap-bridge``) and reissued when it nears expiry or is
no longer valid in the store.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

from iotsec.app.pki.authorities import chain_certificates, pem_of
from iotsec.app.pki.infrastructure import record_infrastructure, stored_status
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import GATEWAY_USER
from iotsec.errors import CoapGatewayError
from iotsec.filesystem import write_private_file
from iotsec.pki import x509 as enc
from iotsec.pki.issue import issue_device
from iotsec.pki.profiles import CertProfile

__all__ = ["BridgeFiles", "MqttBridge", "bridge_files"]

_RENEW_BEFORE = timedelta(days=30)
_PROFILE = CertProfile(name="coap-bridge", validity_days=397,
                       extended_key_usage=(enc.OID_CLIENT_AUTH,))


@dataclass(frozen=True, slots=True)
class BridgeFiles:
    cert: Path
    key: Path
    ca: Path


def _current(rt: Runtime, pem: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
    except (OSError, ValueError):
        return False
    return (cert.not_valid_after_utc - rt.now() > _RENEW_BEFORE
            and stored_status(rt, cert) == "valid")


def bridge_files(rt: Runtime) -> BridgeFiles:
    """The gateway's MQTT client certificate, key and the CA chain (issued when missing,
    near expiry, or no longer valid in the store), in ``IOTSEC_HOME/gateway``."""
    directory = rt.settings.resolved_home / "gateway"
    directory.mkdir(mode=0o700, exist_ok=True)
    files = BridgeFiles(directory / "bridge.pem", directory / "bridge.key",
                        directory / "ca.pem")
    write_private_file(files.ca, pem_of(chain_certificates(rt)).encode("ascii"),
                       overwrite=True)
    if _current(rt, files.cert) and files.key.exists():
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    issued = issue_device(rt.authority("issuing"), device_id=GATEWAY_USER,
                          spki=enc.spki_der(key.public_key()), profile=_PROFILE, now=rt.now())
    record_infrastructure(rt, issued, "coap-bridge")
    write_private_file(files.key, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), overwrite=True)
    write_private_file(files.cert, enc.to_pem(issued.der, "CERTIFICATE"), overwrite=True)
    return files


#: Called on paho's network thread with (topic, payload) for each message received.
Receiver = Callable[[str, bytes], None]


#: Publishes queued for the broker at most; beyond, a CoAP publish is answered 5.03.
MAX_QUEUED = 10_000
#: QoS 1 publishes sent and not yet acknowledged at most (paho's default is 20).
_IN_FLIGHT = 200


class MqttBridge:
    """One MQTT 5 connection; publishes never wait for the broker: paho queues them (QoS 1,
    resent by paho) and its network thread writes them, so the DTLS serving thread never
    writes to the broker's socket. Subscriptions are counted so that the last observer of
    a topic unsubscribes it."""

    def __init__(self, files: BridgeFiles, host: str, port: int, receiver: Receiver) -> None:
        self.host, self.port = host, port
        self._receiver = receiver
        self._lock = threading.Lock()
        self._topics: dict[str, int] = {}
        self._connected = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=GATEWAY_USER,
                                   protocol=mqtt.MQTTv5, reconnect_on_failure=True)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(files.cert), str(files.key))
        self._client.tls_set_context(ctx)
        # Publishes waiting for the broker at most (a full queue is answered 5.03), and
        # enough in flight that 1,000 publishes a second never wait for acknowledgements.
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.max_inflight_messages_set(_IN_FLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            return
        self._connected.set()
        with self._lock:
            topics = list(self._topics)
        for topic in topics:  # a new session: subscribe again
            client.subscribe(topic, qos=1)

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._receiver(msg.topic, bytes(msg.payload))

    def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker to accept; raises :class:`CoapGatewayError`."""
        try:
            self._client.connect(self.host, self.port, keepalive=30, clean_start=True)
        except (ssl.SSLError, OSError) as exc:
            raise CoapGatewayError(f"cannot connect to the MQTT broker at {self.host}:"
                                   f"{self.port}: {type(exc).__name__}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise CoapGatewayError(f"the MQTT broker at {self.host}:{self.port} did not "
                                   "accept the gateway's connection")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> bool:
        """Hand a QoS 1 publish to paho (any thread); False when the broker is not
        connected or too many publishes wait for it."""
        if not self._connected.is_set():
            return False
        try:
            info = self._client.publish(topic, payload, qos=1)
        except ValueError:  # not a topic paho can publish to (callers pass only valid ones)
            return False
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def subscribe(self, topic: str) -> None:
        with self._lock:
            count = self._topics.get(topic, 0)
            self._topics[topic] = count + 1
        if count == 0:
            self._client.subscribe(topic, qos=1)

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            count = self._topics.get(topic, 0) - 1
            if count > 0:
                self._topics[topic] = count
                return
            self._topics.pop(topic, None)
        if count == 0:
            self._client.unsubscribe(topic)
