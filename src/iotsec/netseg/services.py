"""Named services a rule can use instead of port numbers, and what each one means for
security: plaintext protocols (credentials and data readable on the wire) and management
protocols (whoever reaches them can reconfigure the device)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MANAGEMENT_PORTS", "PLAINTEXT_PORTS", "SERVICES", "Service", "Transport"]

Transport = Literal["tcp", "udp"]


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    ports: tuple[tuple[Transport, int], ...]
    description: str
    plaintext: bool = False
    management: bool = False


def _svc(name: str, spec: str, description: str, *, plaintext: bool = False,
         management: bool = False) -> Service:
    ports: list[tuple[Transport, int]] = []
    for part in spec.split():
        port, proto = part.split("/")
        ports.append(("tcp" if proto == "tcp" else "udp", int(port)))
    return Service(name, tuple(ports), description, plaintext, management)


#: Every service name a policy may use. Ports are the IANA assignments.
SERVICES: dict[str, Service] = {s.name: s for s in (
    _svc("mqtt", "1883/tcp", "MQTT without TLS", plaintext=True),
    _svc("mqtts", "8883/tcp", "MQTT over TLS"),
    _svc("mqtt-ws", "8080/tcp", "MQTT over WebSocket without TLS", plaintext=True),
    _svc("mqtt-wss", "8443/tcp", "MQTT over WebSocket with TLS"),
    _svc("http", "80/tcp", "HTTP without TLS", plaintext=True),
    _svc("https", "443/tcp", "HTTP over TLS"),
    _svc("coap", "5683/udp", "CoAP without DTLS", plaintext=True),
    _svc("coaps", "5684/udp", "CoAP over DTLS"),
    _svc("amqp", "5672/tcp", "AMQP without TLS", plaintext=True),
    _svc("amqps", "5671/tcp", "AMQP over TLS"),
    _svc("ssh", "22/tcp", "SSH", management=True),
    _svc("telnet", "23/tcp", "Telnet", plaintext=True, management=True),
    _svc("ftp", "21/tcp", "FTP", plaintext=True),
    _svc("tftp", "69/udp", "TFTP", plaintext=True),
    _svc("snmp", "161/udp", "SNMP", plaintext=True, management=True),
    _svc("snmp-trap", "162/udp", "SNMP traps", plaintext=True),
    _svc("netconf", "830/tcp", "NETCONF over SSH", management=True),
    _svc("rdp", "3389/tcp", "Remote Desktop", management=True),
    _svc("vnc", "5900/tcp", "VNC", plaintext=True, management=True),
    _svc("ipmi", "623/udp", "IPMI / BMC", management=True),
    _svc("winrm", "5985/tcp", "WinRM without TLS", plaintext=True, management=True),
    _svc("winrm-https", "5986/tcp", "WinRM over TLS", management=True),
    _svc("modbus", "502/tcp", "Modbus/TCP", plaintext=True),
    _svc("bacnet", "47808/udp", "BACnet/IP", plaintext=True),
    _svc("opcua", "4840/tcp", "OPC UA"),
    _svc("dnp3", "20000/tcp", "DNP3", plaintext=True),
    _svc("rtsp", "554/tcp", "RTSP (camera streams)", plaintext=True),
    _svc("dns", "53/udp 53/tcp", "DNS"),
    _svc("dot", "853/tcp", "DNS over TLS"),
    _svc("ntp", "123/udp", "NTP"),
    _svc("dhcp", "67/udp", "DHCP (server side)"),
    _svc("syslog", "514/udp", "syslog without TLS", plaintext=True),
    _svc("syslog-tls", "6514/tcp", "syslog over TLS"),
    _svc("lwm2m", "5683/udp", "LwM2M over CoAP without DTLS", plaintext=True),
    _svc("lwm2m-dtls", "5684/udp", "LwM2M over CoAP with DTLS"),
)}

#: Ports whose use is a finding when a rule opens them, with the service names they carry.
PLAINTEXT_PORTS: dict[tuple[Transport, int], str] = {}
MANAGEMENT_PORTS: dict[tuple[Transport, int], str] = {}
for _s in SERVICES.values():
    for _p in _s.ports:
        if _s.plaintext:
            PLAINTEXT_PORTS.setdefault(_p, _s.name)
        if _s.management:
            MANAGEMENT_PORTS.setdefault(_p, _s.name)
