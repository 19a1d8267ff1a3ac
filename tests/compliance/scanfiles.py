"""Scan reports as ``iotsec scan --json-file`` writes them, for use as evidence."""

from __future__ import annotations

from datetime import UTC, datetime

from iotsec.findings.model import Location
from iotsec.scan.model import HostResult, PortScanResult, ScanResult, Service
from iotsec.scan.report import scan_json_bytes
from iotsec.scan.rules import MQTT_ANONYMOUS, PLAINTEXT_TELNET


def scan_report(*, weak: bool = True) -> bytes:
    """A real scan report of 127.0.0.1: Telnet and anonymous MQTT when ``weak``."""
    now = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    services = [Service(host="127.0.0.1", port=8883, protocol="tls", tls=True)]
    findings = []
    if weak:
        services += [Service(host="127.0.0.1", port=2323, protocol="telnet"),
                     Service(host="127.0.0.1", port=1884, protocol="mqtt")]
        findings = [
            PLAINTEXT_TELNET.at(Location.endpoint("127.0.0.1", 2323), "Telnet is open"),
            MQTT_ANONYMOUS.at(Location.endpoint("127.0.0.1", 1884), "anonymous CONNECT "
                              "accepted"),
        ]
    result = ScanResult(
        started_at=now, finished_at=now, targets=("127.0.0.1",), ports="1-65535",
        host_count=1, hosts=[HostResult("127.0.0.1", services=services)], findings=findings,
        port_stats=PortScanResult(open=[("127.0.0.1", s.port) for s in services],
                                  attempted=65535, closed=65535 - len(services)),
        options={})
    return scan_json_bytes(result)
