"""Scan use case: check the request, resolve names, run the scan, cross-check with nmap.

Everything that can refuse a scan (a bad target, a port out of range, a target outside
the scope file, a /8 without confirmation, a name that does not resolve, ``--with-nmap``
without nmap) is checked before the first packet is sent.

Certificates are judged against the fleet's own CA certificates (every CA certificate in
the iotsec store, current and previous, read from the store without touching the keys),
the system's trusted roots, and any CA file the operator adds.

``--fleet`` targets come from the registry: a device's address is its ``ip`` attribute
(``iotsec device add ID --attr ip=192.0.2.7``); devices without one, and retired
devices, are skipped and counted in the notes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from iotsec.app.runtime import Runtime
from iotsec.errors import InputTooLargeError, NotFoundError, ScanTargetError, ScanToolError
from iotsec.eventlog.event import Event
from iotsec.identity.registry import DeviceState
from iotsec.netprobe.net import resolve_names
from iotsec.netprobe.runner import run_scan
from iotsec.netprobe.tls import system_anchors
from iotsec.scan.model import ScanOptions, ScanResult
from iotsec.scan.targets import (
    DEFAULT_PORTS,
    MAX_SCOPE_BYTES,
    MAX_TARGETS,
    PortSpec,
    ScanPlan,
    Scope,
    TargetSpec,
    parse_target,
    plan,
)
from iotsec.scan.tls import TrustStore, load_pem_bundle

__all__ = ["ScanRequest", "fleet_ca_certificates", "fleet_targets", "prepare", "scan"]

MAX_CA_FILE = 4 * 1024 * 1024
NMAP_TIMEOUT = 900.0
#: The device attribute that holds a device's address for ``--fleet``.
ADDRESS_ATTRIBUTE = "ip"

Resolver = Callable[[Sequence[str]], Coroutine[Any, Any, Mapping[str, Sequence[str]]]]


@dataclass(frozen=True)
class ScanRequest:
    targets: Sequence[str] = ()
    ports: str | None = None
    scope_file: Path | None = None
    confirm_large: bool = False
    fleet: bool = False
    with_nmap: bool = False
    ca_files: Sequence[Path] = ()
    use_fleet_ca: bool = True
    options: ScanOptions = field(default_factory=ScanOptions)


@dataclass
class Prepared:
    plan: ScanPlan
    trust: TrustStore
    notes: list[str]
    scope: str | None
    nmap: str | None


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputTooLargeError(f"{what} {path} is {size} bytes; the limit is {limit}")
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise ScanTargetError(f"{what} {path} is a directory", hint="give a file") from None
    if len(data) > limit:
        raise InputTooLargeError(f"{what} {path} is larger than {limit} bytes")
    return data


def fleet_ca_certificates(rt: Runtime) -> list[x509.Certificate]:
    """Every CA certificate in the store (root and issuing, current and previous)."""
    # On the driver (store/reader.py): a scan of given targets imports no SQLAlchemy.
    with rt.reading() as reader:
        rows = reader.rows("SELECT cert_der FROM authorities ORDER BY id")
    return [x509.load_der_x509_certificate(r.cert_der) for r in rows]


def fleet_targets(rt: Runtime) -> tuple[list[TargetSpec], list[str]]:
    """Targets for the registered devices that have an ``ip`` attribute, and notes."""
    # Deferred, like the nmap cross-check below: a scan of given targets (the common case)
    # starts without the registry service.
    from iotsec.app.identity.devices import list_devices

    specs: list[TargetSpec] = []
    missing = retired = invalid = 0
    after: str | None = None
    while True:
        page = list_devices(rt, limit=1000, after=after)
        for device in page:
            if device.state is DeviceState.RETIRED:
                retired += 1
                continue
            value = device.attributes.get(ADDRESS_ATTRIBUTE)
            if not value:
                missing += 1
                continue
            try:
                address = ipaddress.ip_address(value.strip())
            except ValueError:
                invalid += 1
                continue
            specs.append(parse_target(str(address), device=device.id))
            if len(specs) > MAX_TARGETS:
                raise ScanTargetError(f"the fleet has more than {MAX_TARGETS} addresses")
        if len(page) < 1000:
            break
        after = page[-1].id
    notes = []
    if missing:
        notes.append(f"1 registered device has no '{ADDRESS_ATTRIBUTE}' attribute and was not "
                     "scanned" if missing == 1 else
                     f"{missing} registered devices have no '{ADDRESS_ATTRIBUTE}' attribute and "
                     "were not scanned")
    if invalid:
        notes.append(f"{invalid} devices have an '{ADDRESS_ATTRIBUTE}' attribute that is not "
                     "an IP address and were not scanned")
    if retired:
        notes.append(f"{retired} retired devices were not scanned")
    return specs, notes


async def _default_resolver(names: Sequence[str]) -> Mapping[str, Sequence[str]]:
    return await resolve_names(names)


def prepare(request: ScanRequest, *, rt: Runtime | None = None,
            resolver: Resolver | None = None) -> Prepared:
    """Everything that may refuse the scan, done before any packet is sent."""
    notes: list[str] = []
    specs = [parse_target(t) for t in request.targets]
    if len(specs) > MAX_TARGETS:
        raise ScanTargetError(f"more than {MAX_TARGETS} targets were given")
    if request.fleet:
        if rt is None:
            raise ScanTargetError("--fleet needs an initialised iotsec home",
                                  hint="run 'iotsec init' or set IOTSEC_HOME")
        fleet_specs, fleet_notes = fleet_targets(rt)
        specs.extend(fleet_specs)
        notes.extend(fleet_notes)
        if not fleet_specs:
            raise ScanTargetError("no registered device has an address to scan",
                                  hint=f"record addresses with --attr {ADDRESS_ATTRIBUTE}=ADDR "
                                  "on 'iotsec device add'")
    if not specs:
        raise ScanTargetError("no target was given",
                              hint="give addresses, CIDR ranges or host names, or --fleet")
    ports = PortSpec.parse(request.ports or DEFAULT_PORTS)
    scope = None
    if request.scope_file is not None:
        scope = Scope.parse(_read_limited(request.scope_file, MAX_SCOPE_BYTES, "scope file"))
    names = sorted({s.name for s in specs if s.name is not None})
    resolved: Mapping[str, Sequence[str]] = {}
    if names:
        resolved = asyncio.run((resolver or _default_resolver)(names))
    checked = plan(specs, ports, resolved=resolved, scope=scope,
                   confirm_large=request.confirm_large)
    nmap_binary = None
    if request.with_nmap:
        nmap_binary = shutil.which("nmap")
        if nmap_binary is None:
            raise ScanToolError("--with-nmap was given but nmap is not installed")
    fleet_cas: list[x509.Certificate] = []
    if rt is not None and request.use_fleet_ca:
        fleet_cas = fleet_ca_certificates(rt)
    extra: list[x509.Certificate] = []
    for path in request.ca_files:
        found = load_pem_bundle(_read_limited(path, MAX_CA_FILE, "CA file"))
        if not found:
            raise ScanTargetError(f"CA file {path} holds no PEM certificate")
        extra.extend(found)
    system = system_anchors()
    trust = TrustStore.of(fleet=fleet_cas, others=[*extra, *system])
    notes.append(f"certificates judged against {len(fleet_cas)} fleet CA certificates, "
                 f"{len(extra)} from --ca-file and {len(system)} system roots")
    return Prepared(plan=checked, trust=trust, notes=notes,
                    scope=str(request.scope_file) if request.scope_file else None,
                    nmap=nmap_binary)


def _cross_check(binary: str, checked: ScanPlan, result: ScanResult) -> dict[str, object]:
    from iotsec.scan import nmap as nmap_xml  # deferred: only with --with-nmap

    command = nmap_xml.nmap_command(binary, checked)
    try:
        done = subprocess.run(command, capture_output=True, timeout=NMAP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ScanToolError(f"nmap did not finish within {NMAP_TIMEOUT:g} s") from None
    except OSError as exc:
        raise ScanToolError(f"nmap could not be started: {exc.strerror}") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise ScanToolError(f"nmap exited with status {done.returncode}: {tail[0][:200]}")
    parsed = nmap_xml.parse_nmap_xml(done.stdout)
    return nmap_xml.compare(result.port_stats.open, parsed, command)


def scan(request: ScanRequest, *, rt: Runtime | None = None, now: datetime | None = None,
         resolver: Resolver | None = None,
         clock: Callable[[], datetime] | None = None) -> ScanResult:
    """Run a scan. ``now`` is the time certificates are judged at (default: the clock)."""
    prepared = prepare(request, rt=rt, resolver=resolver)
    tick = clock or (rt.now if rt is not None else (lambda: datetime.now(UTC)))
    moment = now or tick()
    result = asyncio.run(run_scan(prepared.plan, request.options, now=moment,
                                  trust=prepared.trust, clock=tick))
    result.scope = prepared.scope
    result.notes[:0] = prepared.notes
    if prepared.nmap is not None:
        result.cross_check = _cross_check(prepared.nmap, prepared.plan, result)
        cc = result.cross_check
        if cc["only_nmap"]:
            result.notes.append(f"nmap found open ports iotsec did not: {cc['only_nmap']}")
        if cc["only_iotsec"]:
            result.notes.append(f"iotsec found open ports nmap did not: {cc['only_iotsec']}")
    if rt is not None:
        # A scan of a home's fleet is a security event (its counts, never the findings).
        rt.record(Event(tick(), "scan.run", "success", actor="cli",
                        subject=result.scope or "targets", detail={
                            "hosts": result.host_count,
                            "services": len(result.services),
                            "findings": len(result.findings)}))
    return result
