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

import logging
import select
import ssl
import threading
import time
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

log = logging.getLogger(__name__)

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


#: Called on the driving (serving) thread with (topic, payload) for each message received.
Receiver = Callable[[str, bytes], None]


#: Publishes queued for the broker at most; beyond, a CoAP publish is answered 5.03.
MAX_QUEUED = 10_000
#: QoS 1 publishes sent and not yet acknowledged at most (paho's default is 20).
_IN_FLIGHT = 200


#: paho's reconnection delays (seconds): the first retry after 1 s, doubling up to 120 s.
_RECONNECT_MIN, _RECONNECT_MAX = 1.0, 120.0
#: How often paho's keep-alive is looked at (its timer is 30 s).
_MISC_EVERY = 1.0


class MqttBridge:
    """One MQTT 5 connection; publishes never wait for the broker: paho queues them (QoS 1,
    resent by paho) and the gateway's serving thread writes them.

    The connection has no thread of its own: it is an :class:`~iotsec.dtls.IoSource`
    driven by the DTLS serving loop (paho's ``loop_read``, ``loop_write`` and ``loop_misc``
    on its socket, in the same ``select``). A publish from the serving thread is only
    queued; the loop writes what a batch of requests queued once their answers are sent,
    so no thread is woken per publish. A publish from another thread (the OSCORE
    listener's) wakes the serving loop, which writes it. A lost connection is reconnected
    as paho's own loop does (1 s, doubling to 120 s), the connecting done on a short-lived
    thread so the serving loop never blocks on the broker. Subscriptions are counted so
    that the last observer of a topic unsubscribes it."""

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
        # Set, so that paho never writes from the thread that publishes: the driving loop
        # writes (paho writes at once only with no loop thread and no such callback).
        self._client.on_socket_register_write = self._queued
        self._driver: int | None = None
        self._wake: Callable[[], None] | None = None
        self._stopping = False
        self._reconnecting: threading.Thread | None = None
        self._retry_at = 0.0
        self._delay = _RECONNECT_MIN
        self._misc_at = 0.0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            return
        self._delay = _RECONNECT_MIN
        self._connected.set()
        with self._lock:
            topics = list(self._topics)
        for topic in topics:  # a new session: subscribe again
            client.subscribe(topic, qos=1)

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()
        self._retry_at = time.monotonic() + self._delay  # as paho's loop waits first

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._receiver(msg.topic, bytes(msg.payload))

    def _queued(self, *args: Any) -> None:
        """paho queued a packet while its socket had nothing queued: from another thread
        than the driving one, wake the loop (the driving thread writes after its batch)."""
        wake = self._wake
        if wake is not None and threading.get_ident() != self._driver:
            wake()

    # --- driven by the serving loop (iotsec.dtls.IoSource) ---------------------------

    def attach(self, wake: Callable[[], None]) -> None:
        self._driver = threading.get_ident()
        self._wake = wake

    def fileno(self) -> int | None:
        if self._reconnecting is not None:
            return None
        sock = self._client.socket()
        return None if sock is None else sock.fileno()

    def want_write(self) -> bool:
        return self._reconnecting is None and self._client.want_write()

    def readable(self) -> None:
        if self._reconnecting is not None:
            return
        self._client.loop_read()
        # Packets already decrypted by the TLS layer do not make the socket readable.
        sock = self._client.socket()
        while sock is not None and isinstance(sock, ssl.SSLSocket) and sock.pending():
            if self._client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                break
            sock = self._client.socket()

    def flush(self) -> None:
        if self._reconnecting is None:
            self._client.loop_write()

    def tick(self, now: float) -> None:
        if self._reconnecting is not None or self._stopping:
            return
        if self._client.socket() is None:
            if now >= self._retry_at:
                self._reconnect(now)
            return
        if now >= self._misc_at:  # keep-alive: a PINGREQ, or the connection found lost
            self._misc_at = now + _MISC_EVERY
            self._client.loop_misc()

    def _reconnect(self, now: float) -> None:
        """Connect again on a thread of its own (a TCP connect and TLS handshake must not
        hold the serving loop); the loop takes the socket back once it is done."""
        self._delay = min(self._delay * 2, _RECONNECT_MAX)

        def run() -> None:
            try:
                self._client.reconnect()
            except (ssl.SSLError, OSError, ValueError) as exc:
                log.info("reconnecting to the MQTT broker at %s:%d: %s", self.host,
                         self.port, exc)
                self._retry_at = time.monotonic() + self._delay
            finally:
                self._reconnecting = None
                if self._wake is not None:
                    self._wake()

        self._reconnecting = threading.Thread(target=run, name="mqtt-reconnect", daemon=True)
        self._reconnecting.start()

    def _pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Drive the connection from the calling thread until ``until()`` or ``timeout``
        (before the serving loop runs, and after it stopped)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            fd = self.fileno()
            if left <= 0 or fd is None:
                return until()
            writing = [fd] if self.want_write() else []
            ready, _, _ = select.select([fd], writing, [], min(left, 0.1))
            if fd in ready:
                self.readable()
            if self.want_write():
                self.flush()
            self.tick(time.monotonic())
        return True

    def start(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker to accept; raises :class:`CoapGatewayError`."""
        try:
            self._client.connect(self.host, self.port, keepalive=30, clean_start=True)
        except (ssl.SSLError, OSError) as exc:
            raise CoapGatewayError(f"cannot connect to the MQTT broker at {self.host}:"
                                   f"{self.port}: {type(exc).__name__}: {exc}") from None
        if not self._pump(self._connected.is_set, timeout):
            self.stop()
            raise CoapGatewayError(f"the MQTT broker at {self.host}:{self.port} did not "
                                   "accept the gateway's connection")

    def stop(self) -> None:
        """Disconnect (from the driving thread, once the serving loop has returned)."""
        self._stopping = True
        reconnecting = self._reconnecting
        if reconnecting is not None:
            reconnecting.join(10)
        self._client.disconnect()
        self._pump(lambda: self._client.socket() is None, 2.0)

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
