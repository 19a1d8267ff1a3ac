"""nmap as an optional cross-check: the command line, and its XML output (``-oX -``).

The XML is parsed with the standard library's ElementTree after two checks: a size limit,
and no ``<!ENTITY`` declaration (nmap never writes one; refusing them rules out entity
expansion attacks without a further dependency).
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotsec.errors import ScanToolError
from iotsec.scan.targets import PortSpec, ScanPlan

__all__ = ["NmapResult", "compare", "nmap_command", "parse_nmap_xml"]

MAX_XML = 64 * 1024 * 1024


@dataclass
class NmapResult:
    version: str | None = None
    open: set[tuple[str, int]] = field(default_factory=set)
    names: dict[tuple[str, int], str] = field(default_factory=dict)


def _tcp_ports(ports: PortSpec) -> str:
    text = str(PortSpec(tcp=ports.tcp))
    return text[2:] if text.startswith("T:") else text


def plan_networks(plan: ScanPlan) -> list[str]:
    """The plan's addresses as CIDR blocks (nmap takes those as they are)."""
    out: list[str] = []
    for version, intervals in ((4, plan.v4), (6, plan.v6)):
        for lo, hi in intervals:
            first = ipaddress.ip_address(lo) if version == 6 else ipaddress.IPv4Address(lo)
            last = ipaddress.ip_address(hi) if version == 6 else ipaddress.IPv4Address(hi)
            out.extend(str(n) for n in ipaddress.summarize_address_range(first, last))
    return out


def nmap_command(binary: str, plan: ScanPlan) -> list[str]:
    """``nmap -sT`` over the plan's TCP ports: a connect scan like iotsec's, no ping, no
    DNS, XML on standard output."""
    networks = plan_networks(plan)
    command = [binary, "-sT", "-Pn", "-n", "--open", "-p", _tcp_ports(plan.ports), "-oX", "-"]
    if any(":" in n for n in networks):
        command.append("-6")
    return command + networks


def parse_nmap_xml(data: bytes) -> NmapResult:
    """Open TCP ports (and nmap's name for each) from ``nmap -oX`` output."""
    if len(data) > MAX_XML:
        raise ScanToolError(f"nmap wrote more than {MAX_XML} bytes of XML")
    if b"<!ENTITY" in data:
        raise ScanToolError("nmap's output declares XML entities; refusing to parse it")
    try:
        root = ET.fromstring(data)  # noqa: S314 - see the module docstring
    except ET.ParseError as exc:
        raise ScanToolError(f"nmap's XML output is not well-formed: {exc}") from None
    if root.tag != "nmaprun":
        raise ScanToolError("nmap's XML output has no <nmaprun> root")
    result = NmapResult(version=root.get("version"))
    for host in root.iter("host"):
        address = next((a.get("addr") for a in host.iter("address")
                        if a.get("addrtype") in ("ipv4", "ipv6")), None)
        if address is None:
            continue
        for port in host.iter("port"):
            state = port.find("state")
            if port.get("protocol") != "tcp" or state is None or state.get("state") != "open":
                continue
            number = port.get("portid", "")
            if not number.isdigit():
                continue
            key = (address, int(number))
            result.open.add(key)
            service = port.find("service")
            if service is not None and service.get("name"):
                result.names[key] = str(service.get("name"))
    return result


def _show(items: Iterable[tuple[str, int]]) -> list[str]:
    return [f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in sorted(items)]


def compare(ours: Sequence[tuple[str, int]], nmap: NmapResult,
            command: Sequence[str]) -> dict[str, Any]:
    """Where iotsec and nmap agree and differ on open TCP ports."""
    mine = set(ours)
    return {
        "tool": "nmap", "version": nmap.version, "command": list(command),
        "agreed": len(mine & nmap.open),
        "only_nmap": _show(nmap.open - mine), "only_iotsec": _show(mine - nmap.open),
        "service_names": {_show([k])[0]: v for k, v in sorted(nmap.names.items())},
    }
