"""The device SDK (``iotsec.device``): MQTT 5 over mutual TLS with paho-mqtt 2.x.

::

    from iotsec.device import DeviceClient

    with DeviceClient.from_files("dev1.crt", "dev1.key", "ca.pem", "broker.example", 8883) as c:
        c.subscribe("commands/dev1/#", lambda m: print(m.topic, m.payload))
        c.publish("devices/dev1/telemetry", b'{"t": 21.5}')

- TLS 1.2 or newer, the broker's certificate checked against the iotsec CA chain and its
  host name (``check_hostname``), the device's certificate and key presented.
- :meth:`DeviceClient.publish` (QoS 1 or 2) waits for the broker's acknowledgement and
  raises :class:`~iotsec.errors.MqttNotAuthorizedError` when the MQTT 5 reason code says
  no (0x87 not authorized, 0x90 topic name invalid, ...). A QoS 0 publish is never
  acknowledged, so a refusal cannot be seen.
- :meth:`DeviceClient.subscribe` raises on a refused SUBACK. Mosquitto's ``acl_file``
  grants every subscription and filters delivery instead (nothing the device may not read
  arrives), so with Mosquitto a forbidden subscription simply stays silent.
- Connection loss: paho reconnects in the background with exponential backoff between
  ``min_backoff`` and ``max_backoff`` seconds, and the client renews its subscriptions when
  the broker did not keep the session. A refused reconnection (revoked certificate,
  disabled device) keeps backing off; :attr:`DeviceClient.connected` tells.
- Certificates are renewed by :class:`iotsec.device.RenewalAgent` (EST over the device's
  own mutual TLS); :meth:`DeviceClient.reload` then reads the new files and reconnects
  with them.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from iotsec.access.topics import TopicError, TopicFilter, parse_topic_name
from iotsec.errors import (
    InvalidInputError,
    MqttConnectError,
    MqttError,
    MqttNotAuthorizedError,
    MqttTimeoutError,
)
from iotsec.pki.serial import format_serial

__all__ = ["MAX_PEM", "DeviceClient", "Handler", "Message"]

MAX_PEM = 64 * 1024


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


Handler = Callable[[Message], None]


def _reason(code: Any) -> int:
    if isinstance(code, ReasonCode):
        return int(code.value)
    return int(code)


def _name(code: int, packet: str) -> str:
    try:
        return str(ReasonCode(getattr(PacketTypes, packet), identifier=code))
    except Exception:
        return f"reason 0x{code:02x}"


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise InvalidInputError("the device certificate has no common name")
    return str(names[0].value)


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_PEM:
            raise InvalidInputError(f"{what} {path} is larger than {MAX_PEM} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path} does not exist") from None


class DeviceClient:
    """One device's connection to the broker (thread-safe; callbacks run on paho's
    network thread)."""

    def __init__(self, *, cert: Path, key: Path, ca_chain: Path, host: str, port: int,
                 keepalive: int = 60, timeout: float = 10.0, min_backoff: float = 1.0,
                 max_backoff: float = 60.0, key_password: bytes | None = None) -> None:
        self.cert_path, self.key_path, self.ca_path = cert, key, ca_chain
        self.host, self.port, self.keepalive, self.timeout = host, port, keepalive, timeout
        self._key_password = key_password
        certificate = x509.load_pem_x509_certificate(_read(cert, "certificate"))
        self.device_id = _cn(certificate)
        self.not_after = certificate.not_valid_after_utc
        self.serial = format_serial(certificate.serial_number)
        self._lock = threading.Lock()
        self._connack = threading.Event()
        self._connect_reason: int | None = None
        self._acks: dict[int, tuple[threading.Event, list[int]]] = {}
        self._subscriptions: dict[str, tuple[int, Handler]] = {}
        self.connected = False
        self.last_disconnect: str | None = None
        self._backoff = (max(1, int(min_backoff)), max(1, int(max_backoff)))
        self._client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device_id,
                             protocol=mqtt.MQTTv5, reconnect_on_failure=True)
        client.reconnect_delay_set(min_delay=self._backoff[0], max_delay=self._backoff[1])
        client.tls_set_context(self._tls_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    @classmethod
    def from_files(cls, cert: str | Path, key: str | Path, ca_chain: str | Path, host: str,
                   port: int = 8883, **options: Any) -> DeviceClient:
        """A client for the device whose certificate and key are in ``cert`` / ``key``,
        trusting the iotsec CA chain in ``ca_chain``. Call :meth:`connect` (or use it as a
        context manager)."""
        if not 1 <= port <= 65535:
            raise InvalidInputError(f"port {port} is out of range")
        return cls(cert=Path(cert), key=Path(key), ca_chain=Path(ca_chain), host=host,
                   port=port, **options)

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_cert_chain(str(self.cert_path), str(self.key_path),
                                password=self._key_password)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidInputError(f"cannot load the device certificate and key: {exc}"
                                    ) from None
        return ctx

    # --- paho callbacks (network thread) ---------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Properties | None) -> None:
        code = _reason(reason)
        self._connect_reason = code
        self.connected = code == 0
        if code == 0 and not getattr(flags, "session_present", False):
            with self._lock:
                subs = list(self._subscriptions.items())
            for topic, (qos, _) in subs:
                client.subscribe(topic, qos)
        self._connack.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Properties | None) -> None:
        self.connected = False
        self.last_disconnect = str(reason)
        with self._lock:
            waiting = list(self._acks.values())
        for event, _ in waiting:
            event.set()  # wake waiters; they see no reason code
        self._connack.set()

    def _ack(self, mid: int, codes: list[int]) -> None:
        with self._lock:
            entry = self._acks.get(mid)
        if entry is not None:
            entry[1].extend(codes)
            entry[0].set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Properties | None) -> None:
        self._ack(mid, [_reason(reason)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Properties | None) -> None:
        self._ack(mid, [_reason(r) for r in reasons])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        with self._lock:
            handlers = [h for f, (_, h) in self._subscriptions.items()
                        if mqtt.topic_matches_sub(f, msg.topic)]
        for handler in handlers:
            handler(message)

    # --- API ---------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Connect and wait for the broker's CONNACK; raises :class:`MqttConnectError`."""
        self._connack.clear()
        self._connect_reason = None
        try:
            self._client.connect(self.host, self.port, keepalive=self.keepalive,
                                 clean_start=True)
        except (ssl.SSLError, OSError) as exc:
            raise MqttConnectError(f"cannot connect to {self.host}:{self.port}: "
                                   f"{type(exc).__name__}: {exc}") from None
        self._client.loop_start()
        if not self._connack.wait(timeout or self.timeout):
            self._client.loop_stop()
            raise MqttTimeoutError(f"no CONNACK from {self.host}:{self.port}")
        if self._connect_reason != 0:
            self._client.loop_stop()
            detail = (_name(self._connect_reason, "CONNACK") if self._connect_reason is not None
                      else f"the connection was closed ({self.last_disconnect})")
            raise MqttConnectError(f"the broker refused the connection: {detail}")

    def _wait(self, mid: int, what: str, timeout: float | None) -> list[int]:
        with self._lock:
            entry = self._acks.get(mid)
        assert entry is not None
        try:
            if not entry[0].wait(timeout or self.timeout):
                raise MqttTimeoutError(f"no acknowledgement for the {what}")
            if not entry[1]:
                raise MqttConnectError(f"the connection was lost before the {what} was "
                                       f"acknowledged ({self.last_disconnect})")
            return entry[1]
        finally:
            with self._lock:
                self._acks.pop(mid, None)

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False,
                timeout: float | None = None) -> None:
        """Publish and (QoS 1/2) wait for the acknowledgement; a refusal raises."""
        try:
            parse_topic_name(topic)
        except TopicError as exc:
            raise InvalidInputError(str(exc), hint=exc.hint) from None
        if qos not in (0, 1, 2):
            raise InvalidInputError("qos must be 0, 1 or 2")
        with self._lock:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
            if qos:
                self._acks[info.mid] = (threading.Event(), [])
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._lock:
                self._acks.pop(info.mid, None)
            raise MqttError(f"cannot publish: {mqtt.error_string(info.rc)}")
        if not qos:
            return
        code = self._wait(info.mid, "publish", timeout)[0]
        if code >= 0x80:
            raise MqttNotAuthorizedError(
                f"the broker refused the publish to {topic!r}: {_name(code, 'PUBACK')}",
                reason_code=code)

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1,
                  timeout: float | None = None) -> int:
        """Subscribe, wait for the SUBACK and return the granted QoS; a refusal raises."""
        try:
            TopicFilter.parse(topic_filter)
        except TopicError as exc:
            raise InvalidInputError(str(exc), hint=exc.hint) from None
        with self._lock:
            self._subscriptions[topic_filter] = (qos, handler)
            rc, mid = self._client.subscribe(topic_filter, qos)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._acks[mid] = (threading.Event(), [])
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"cannot subscribe: {mqtt.error_string(rc)}")
        code = self._wait(mid, "subscription", timeout)[0]
        if code >= 0x80:
            with self._lock:
                self._subscriptions.pop(topic_filter, None)
            raise MqttNotAuthorizedError(
                f"the broker refused the subscription to {topic_filter!r}: "
                f"{_name(code, 'SUBACK')}", reason_code=code)
        return code

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
        self.connected = False

    def __enter__(self) -> DeviceClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- certificate renewal -----------------------------------------------------------

    def renewal_due(self, before: timedelta = timedelta(days=30),
                    now: datetime | None = None) -> bool:
        return self.not_after - (now or datetime.now(UTC)) <= before

    def reload(self) -> None:
        """Read the certificate and key files again (after a renewal replaced them) and,
        if the client was connected, reconnect with them; subscriptions are renewed."""
        certificate = x509.load_pem_x509_certificate(_read(self.cert_path, "certificate"))
        if _cn(certificate) != self.device_id:
            raise InvalidInputError(f"{self.cert_path} now names another device "
                                    f"({_cn(certificate)!r}, not {self.device_id!r})")
        was_connected = self.connected
        new_client = self._new_client()  # loads the files: a bad pair changes nothing
        self.close()
        self._client = new_client
        self.not_after = certificate.not_valid_after_utc
        self.serial = format_serial(certificate.serial_number)
        if was_connected:
            self.connect()
