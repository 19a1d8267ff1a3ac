"""MQTT broker checks: anonymous access, and a subscription to ``#`` granted.

The anonymous CONNECT already happened during identification (its CONNACK return code is
on the :class:`~iotsec.scan.model.Service`). When it was accepted, a second anonymous
session subscribes to ``#`` with QoS 0 and reads the SUBACK: a granted QoS (0-2) rather
than 0x80 means the broker accepted the subscription. It then listens for a moment and
counts what arrives (topics and payloads are not kept). Nothing is published, and the
clean session leaves nothing behind on the broker.
"""

from __future__ import annotations

import asyncio
import secrets

from iotsec.netprobe.net import open_conversation
from iotsec.netprobe.tls import permissive_context
from iotsec.scan import probes
from iotsec.scan.model import WildcardResult

__all__ = ["check_wildcard"]

LISTEN_SECONDS = 0.3


async def check_wildcard(host: str, port: int, timeout: float, *, tls: bool = False,
                         server_name: str | None = None, username: str | None = None,
                         password: str | None = None) -> WildcardResult:
    """Subscribe to ``#`` (anonymously, or with the given credentials)."""
    result = WildcardResult()
    try:
        conv = await open_conversation(host, port, timeout,
                                       tls=permissive_context() if tls else None,
                                       server_hostname=server_name)
    except (OSError, TimeoutError) as exc:
        result.notes.append(f"could not reconnect to subscribe: {type(exc).__name__}")
        return result
    try:
        await conv.send(probes.mqtt_connect(f"iotsec-scan-{secrets.token_hex(4)}",
                                            username=username, password=password), timeout)
        await conv.read(timeout, until=lambda d: probes.parse_connack(d) is not None)
        if probes.parse_connack(bytes(conv.received)) != 0:
            result.notes.append("the broker refused the second connection")
            return result
        start = len(conv.received)
        packet_id = 0x1D5A
        await conv.send(probes.mqtt_subscribe(packet_id, "#"), timeout)
        await conv.read(timeout, until=lambda d: probes.parse_suback(d[start:], packet_id)
                        is not None)
        result.suback = probes.parse_suback(bytes(conv.received[start:]), packet_id)
        if result.granted:
            await conv.read(LISTEN_SECONDS)
            packets = probes.iter_mqtt_packets(bytes(conv.received[start:]))
            result.messages = sum(1 for kind, _f, _b in packets if kind == 3)
        conv.writer.write(probes.MQTT_DISCONNECT)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        result.notes.append(f"subscription check failed: {type(exc).__name__}")
    finally:
        await conv.close()
    return result
