"""``iotsec scan`` on DTLS-wrapped CoAP: the gateway (client certificate required, a chain
to the fleet's CA) and libcoap's coap-server-openssl with a certificate of another CA and
no client certificate asked for."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from iotsec.app import scan as scan_app
from iotsec.netprobe.dtls import handshake
from iotsec.scan.model import ScanResult, Service
from tests.broker.support import wait_for
from tests.coap.conftest import Fleet
from tests.coap.support import gateway
from tests.ports import free_port
from tests.services import require_tool


def _scan(fleet: Fleet, port: int) -> tuple[ScanResult, Service]:
    result = scan_app.scan(scan_app.ScanRequest(targets=["127.0.0.1"], ports=f"U:{port}"),
                           rt=fleet.rt)
    services = [s for h in result.hosts for s in h.services if s.port == port]
    assert len(services) == 1, result
    return result, services[0]


def test_the_gateway_is_coaps_requiring_a_fleet_certificate(fleet: Fleet) -> None:
    with gateway(fleet.rt, fleet.mqtt_port) as gw:
        result, service = _scan(fleet, gw.address[1])
    assert service.name == "coaps" and service.transport == "udp"
    assert service.details["dtls"] == "DTLSv1.2"
    assert service.details["client_certificate"] == "required"
    tls = service.details["tls"]
    assert tls["version"] == "DTLSv1.2" and tls["cipher"].startswith("ECDHE-ECDSA-")
    assert tls["accepted_old"] == [] and tls["static_rsa_suites"] == []
    assert tls["chain"], tls
    # Chained to the fleet's CA, named for 127.0.0.1, client certificates required: clean.
    assert [f.rule.id for f in result.findings] == [], result.findings


@contextlib.contextmanager
def _libcoap_server(binary: str, port: int, cert: Path, key: Path) -> Iterator[int]:
    proc = subprocess.Popen([binary, "-A", "127.0.0.1", "-p", str(port - 1), "-c", str(cert),
                             "-j", str(key), "-n"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def test_libcoap_server_with_a_foreign_certificate(fleet: Fleet, tmp_path: Path) -> None:
    binary = require_tool("coap-server-openssl", "Debian package 'libcoap3-bin'")
    openssl = require_tool("openssl", "Debian package 'openssl'")
    key, cert = tmp_path / "other.key", tmp_path / "other.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "30", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    # libcoap serves coaps on the port after the CoAP one (-p).
    port = free_port(socket.SOCK_DGRAM)
    with _libcoap_server(binary, port, cert, key):
        assert wait_for(lambda: _probe(port), 5)
        result, service = _scan(fleet, port)
    assert service.name == "coaps"
    assert service.details["client_certificate"] == "not requested"
    assert service.details.get("code") is not None  # CoAP answered inside the session
    rules = {f.rule.id for f in result.findings}
    assert {"dtls/no-client-certificate", "tls/self-signed"} <= rules, result.findings


def _probe(port: int) -> bool:
    return handshake("127.0.0.1", port, timeout=0.5).answered
