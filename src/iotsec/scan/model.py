"""What a scan is asked to do and what it found: the options of each phase (ports, probes,
TLS, credentials) and the results (services, hosts, the scan). Plain values: the network work
that fills them is :mod:`iotsec.netprobe`; judging them is :mod:`iotsec.scan.rules` and
:mod:`iotsec.scan.tls`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iotsec.findings.model import Finding
from iotsec.scan import probes
from iotsec.scan.credentials import CredentialConfig

__all__ = [
    "MAX_CONCURRENCY", "MAX_RATE", "READ_LIMIT", "HostResult", "PortScanConfig", "PortScanResult",
    "ProbeConfig", "ScanOptions", "ScanResult", "Service", "TlsConfig", "WildcardResult"
]


MAX_CONCURRENCY = 20_000
MAX_RATE = 1_000_000.0


@dataclass(frozen=True, slots=True)
class PortScanConfig:
    """``concurrency``: connections in flight at once; ``rate``: connection attempts per
    second (0 = no limit beyond concurrency); ``timeout``: seconds before a silent port is
    called filtered."""

    concurrency: int = 500
    rate: float = 200_000.0
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if not 0 <= self.rate <= MAX_RATE:
            raise ValueError(f"rate must be between 0 and {MAX_RATE:.0f} per second")
        if not 0.05 <= self.timeout <= 60:
            raise ValueError("the connect timeout must be between 0.05 and 60 seconds")


@dataclass
class PortScanResult:
    open: list[tuple[str, int]] = field(default_factory=list)
    attempted: int = 0
    closed: int = 0
    filtered: int = 0
    unreachable: int = 0
    seconds: float = 0.0


#: The most a single probe reads from a service before it stops listening.
READ_LIMIT = 16 * 1024


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    connect_timeout: float = 1.0
    banner_wait: float = 0.4
    probe_timeout: float = 0.6
    read_limit: int = READ_LIMIT

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "banner_wait", "probe_timeout"):
            if not 0.01 <= getattr(self, name) <= 60:
                raise ValueError(f"{name} must be between 0.01 and 60 seconds")
        if not 256 <= self.read_limit <= 1024 * 1024:
            raise ValueError("the read limit must be between 256 bytes and 1 MiB")


@dataclass
class Service:
    """What listens on one port, as far as probing could tell."""

    host: str
    port: int
    transport: str = "tcp"
    protocol: str = "unknown"
    tls: bool = False
    banner: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The first HTTP answer (to decide whether there is a login, and how).
    http: probes.HttpResponse | None = None
    #: The CONNACK return code to an anonymous CONNECT.
    connack: int | None = None
    server_name: str | None = None

    @property
    def name(self) -> str:
        if self.tls and self.protocol in ("http", "mqtt", "rtsp", "coap"):
            return {"http": "https", "mqtt": "mqtts", "rtsp": "rtsps",
                    "coap": "coaps"}[self.protocol]
        if self.tls and self.protocol == "unknown":
            return "tls"
        return self.protocol

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "transport": self.transport, "service": self.name,
                "protocol": self.protocol, "tls": self.tls, "banner": self.banner,
                "details": self.details, "notes": list(self.notes),
                "identify_seconds": round(self.seconds, 3)}


@dataclass
class WildcardResult:
    #: The SUBACK codes for '#', or None when no SUBACK came back.
    suback: tuple[int, ...] | None = None
    messages: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def granted(self) -> bool:
        return bool(self.suback) and all(code <= 2 for code in self.suback or ())


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """``timeout``: seconds for one handshake; ``budget``: seconds for the whole audit."""

    timeout: float = 1.0
    budget: float = 4.0
    weak_suite_rounds: int = 4



@dataclass(frozen=True, slots=True)
class ScanOptions:
    ports: PortScanConfig = field(default_factory=PortScanConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    credentials: CredentialConfig = field(default_factory=CredentialConfig)
    #: Open ports identified and checked at once.
    service_concurrency: int = 32
    udp_concurrency: int = 64

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.ports.concurrency, "rate": self.ports.rate,
            "connect_timeout": self.ports.timeout, "banner_wait": self.probe.banner_wait,
            "probe_timeout": self.probe.probe_timeout, "read_limit": self.probe.read_limit,
            "tls_timeout": self.tls.timeout, "credentials": self.credentials.enabled,
            "credential_rate": self.credentials.rate,
        }


@dataclass
class HostResult:
    address: str
    name: str | None = None
    device: str | None = None
    services: list[Service] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "name": self.name, "device": self.device,
                "services": [s.to_dict() for s in sorted(
                    self.services, key=lambda s: (s.transport, s.port))]}


@dataclass
class ScanResult:
    started_at: datetime
    finished_at: datetime
    targets: tuple[str, ...]
    ports: str
    host_count: int
    hosts: list[HostResult]
    findings: list[Finding]
    port_stats: PortScanResult
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    cross_check: dict[str, Any] | None = None
    scope: str | None = None
    seconds: float = 0.0

    @property
    def services(self) -> list[Service]:
        return [s for h in self.hosts for s in h.services]
