"""The loopback lab: every fixture server the scanner tests scan, started once per session.

``EXPECTED`` is the exact set of findings per fixture, and ``SERVICES`` the name each one
must be identified as: the tests compare the scan against both, so a false positive and a
miss fail alike.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from iotsec.app import scan as scan_app
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.scan.credentials import CredentialConfig
from iotsec.scan.model import PortScanConfig, ProbeConfig, ScanOptions, ScanResult
from tests.ports import free_port
from tests.scan import servers as srv
from tests.services import require_tool

#: The exact findings (rule ids) of every fixture.
EXPECTED: dict[str, set[str]] = {
    "tls_weak": {"tls/old-protocol", "tls/weak-cipher", "tls/weak-key-exchange"},
    "tls_expired": {"tls/cert-expired", "tls/self-signed", "tls/weak-key"},
    "tls_good": set(),
    "tls_mismatch": {"tls/hostname-mismatch"},
    "tls_expiring": {"tls/cert-expiring"},
    "mqtt_anon": {"plaintext/mqtt", "mqtt/anonymous", "mqtt/wildcard-subscribe"},
    "mqtt_auth": {"plaintext/mqtt"},
    "mqtts_auth": set(),
    "telnet_default": {"plaintext/telnet", "credentials/default"},
    "http_basic_default": {"plaintext/http-login", "credentials/default"},
    "http_basic_any": {"plaintext/http-login", "credentials/accepts-any"},
    "http_plain": set(),
    "http_form": {"plaintext/http-login"},
    "ftp": {"plaintext/ftp"},
    "ssh": set(),
    "rtsp": set(),
    "modbus": {"plaintext/modbus"},
    "coap": {"plaintext/coap"},
    "silent": set(),
    "endless": set(),
    "tls_stall": set(),
}

#: What each fixture must be identified as.
SERVICES: dict[str, str] = {
    "tls_weak": "https", "tls_expired": "https", "tls_good": "https",
    "tls_mismatch": "https", "tls_expiring": "https", "mqtt_anon": "mqtt",
    "mqtt_auth": "mqtt", "mqtts_auth": "mqtts", "telnet_default": "telnet",
    "http_basic_default": "http", "http_basic_any": "http", "http_plain": "http",
    "http_form": "http", "ftp": "ftp", "ssh": "ssh", "rtsp": "rtsp", "modbus": "modbus",
    "coap": "coap", "silent": "unknown", "endless": "unknown", "tls_stall": "tls",
}

UDP_FIXTURES = {"coap"}
STRONG_PASSWORD = "k9T!vQ2#pLx8-unlisted"


@dataclass
class Lab:
    rt: Runtime
    directory: Path
    ports: dict[str, int] = field(default_factory=dict)

    def spec(self, *names: str) -> str:
        chosen = names or tuple(self.ports)
        tcp = sorted(self.ports[n] for n in chosen if n not in UDP_FIXTURES)
        udp = sorted(self.ports[n] for n in chosen if n in UDP_FIXTURES)
        parts = []
        if tcp:
            parts.append("T:" + ",".join(map(str, tcp)))
        if udp:
            parts.append("U:" + ",".join(map(str, udp)))
        return ",".join(parts)

    def logs(self) -> str:
        """The last lines the lab's server processes wrote (for a failure's message)."""
        return "\n".join(f"{log.name}: {log.read_text(errors='replace')[-400:]}"
                         for log in sorted(self.directory.glob("proc-*.log")))

    def name_of(self, port: int, transport: str = "tcp") -> str:
        for name, p in self.ports.items():
            if p == port and (name in UDP_FIXTURES) == (transport == "udp"):
                return name
        raise KeyError(port)


#: The lab's wait for an answer to each probe. The default (0.6 s) is what a scan of a
#: network waits; the suite's parallel workers share two CPUs, and once all three Mosquitto
#: brokers of the lab came out unidentified in a full run (each was fine alone; they are
#: now also waited for until they answer MQTT, not only until they listen). A silent port
#: still takes at most the banner wait and two of these.
LAB_PROBE_TIMEOUT = 1.0


def fast_options(**credentials: object) -> ScanOptions:
    """Options for the loopback lab: the same code paths, shorter waits for credentials,
    and room for the probes' answers on a busy test machine."""
    return ScanOptions(ports=PortScanConfig(concurrency=200),
                       probe=ProbeConfig(probe_timeout=LAB_PROBE_TIMEOUT),
                       credentials=CredentialConfig(**{"rate": 1000, "timeout": 2.0,
                                                       **credentials}))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, openssl: str) -> Iterator[Lab]:
    mosquitto = require_tool("mosquitto", "Debian package 'mosquitto'")
    mosquitto_passwd = require_tool("mosquitto_passwd", "Debian package 'mosquitto'")
    directory = tmp_path_factory.mktemp("scan-lab")
    home = directory / "home"
    settings = Settings(home=home, database_url=None)
    init_home(settings, store_passphrase=True)
    rt = open_runtime(settings)
    procs = srv.Processes()
    fakes = srv.FakeServers()
    lab = Lab(rt=rt, directory=directory)
    try:
        ports = lab.ports
        d = directory
        # TLS servers (openssl s_server).
        cert, key, chain = srv.fleet_server_cert(rt, d, "weak", dns=(), ips=(srv.HOST,),
                                                 rsa_bits=2048)
        ports["tls_weak"] = free_port()
        procs.start(srv.s_server(openssl, ports["tls_weak"], cert, key, "-cert_chain",
                                 str(chain), "-cipher", "ALL:COMPLEMENTOFALL:@SECLEVEL=0",
                                 "-min_protocol", "TLSv1", "-max_protocol", "TLSv1.2"),
                    d, ports["tls_weak"])
        old_cert, old_key = srv.expired_self_signed(d, "expired")
        ports["tls_expired"] = free_port()
        procs.start(srv.s_server(openssl, ports["tls_expired"], old_cert, old_key, "-cipher",
                                 "ECDHE:!aNULL:!eNULL:@SECLEVEL=0", "-min_protocol",
                                 "TLSv1.2"), d, ports["tls_expired"])
        for name, dns, ips, days in (
                ("tls_good", ("localhost",), (srv.HOST,), 397),
                ("tls_mismatch", ("sensor-7.fleet.test",), (), 397),
                ("tls_expiring", ("localhost",), (srv.HOST,), 10)):
            cert, key, chain = srv.fleet_server_cert(rt, d, name, dns=dns, ips=ips, days=days)
            ports[name] = free_port()
            procs.start(srv.s_server(openssl, ports[name], cert, key, "-cert_chain",
                                     str(chain)), d, ports[name])
        # Mosquitto brokers on unusual ports.
        ports["mqtt_anon"] = free_port()
        conf = srv.mosquitto_conf(d, "anon", ports["mqtt_anon"], anonymous=True)
        srv.wait_mqtt(ports["mqtt_anon"], procs.start([mosquitto, "-c", str(conf)], d,
                                              ports["mqtt_anon"]))
        ports["mqtt_auth"] = free_port()
        conf = srv.mosquitto_conf(d, "auth", ports["mqtt_auth"], anonymous=False,
                                  users={"sensor-1": STRONG_PASSWORD},
                                  mosquitto_passwd=mosquitto_passwd)
        srv.wait_mqtt(ports["mqtt_auth"], procs.start([mosquitto, "-c", str(conf)], d,
                                              ports["mqtt_auth"]))
        cert, key, chain = srv.fleet_server_cert(rt, d, "broker", dns=("localhost",),
                                                 ips=(srv.HOST,))
        full_chain = d / "broker-full.pem"
        full_chain.write_bytes(cert.read_bytes() + chain.read_bytes())
        ports["mqtts_auth"] = free_port()
        conf = srv.mosquitto_conf(d, "tls", ports["mqtts_auth"], anonymous=False,
                                  users={"sensor-1": STRONG_PASSWORD}, cert=full_chain,
                                  key=key, mosquitto_passwd=mosquitto_passwd)
        srv.wait_mqtt(ports["mqtts_auth"], procs.start([mosquitto, "-c", str(conf)], d,
                                              ports["mqtts_auth"]), tls=True)
        # Fakes.
        ports["telnet_default"] = fakes.tcp(srv.telnet_handler("admin", "admin"))
        ports["http_basic_default"] = fakes.tcp(srv.http_basic_handler("admin", "1234"))
        ports["http_basic_any"] = fakes.tcp(srv.http_basic_handler(None, None))
        ports["http_plain"] = fakes.tcp(srv.http_page_handler(login_form=False))
        ports["http_form"] = fakes.tcp(srv.http_page_handler(login_form=True))
        ports["ftp"] = fakes.tcp(srv.ftp_handler("ops", STRONG_PASSWORD))
        ports["ssh"] = fakes.tcp(srv.ssh_handler)
        ports["rtsp"] = fakes.tcp(srv.rtsp_handler)
        ports["modbus"] = fakes.tcp(srv.modbus_handler)
        ports["coap"] = fakes.coap()
        ports["silent"] = fakes.tcp(srv.silent_handler)
        ports["endless"] = fakes.tcp(srv.endless_handler)
        ports["tls_stall"] = fakes.tcp(srv.tls_stall_handler)
        yield lab
    finally:
        procs.stop()
        fakes.stop()
        rt.close()
        if os.environ.get("IOTSEC_KEEP_SCAN_LAB"):
            print(f"scan lab kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_scan(lab: Lab) -> ScanResult:
    """One scan of the whole lab, shared by the tests that only read it."""
    request = scan_app.ScanRequest(targets=[srv.HOST], ports=lab.spec(),
                                   options=fast_options())
    return scan_app.scan(request, rt=lab.rt)
