"""The transport part of a rule: protocols, ports and named services.

``proto`` is tcp, udp, icmp or any (or a list of tcp and udp); ``ports`` a port or list
of ports and ranges ("8000-8010"), which need ``proto: tcp`` or ``udp``; ``services`` a
name or list of names from ``iotsec.netseg.services`` (each brings its own protocol and
port; with an explicit ``proto`` only the matching part is taken, and none is an error).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, NamedTuple

from iotsec.netseg.model import PortMatch, PortRanges, Proto
from iotsec.netseg.services import SERVICES, Transport

__all__ = ["TransportProblem", "parse_transport"]

_PORT_RANGE = re.compile(r"\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?")


class TransportProblem(NamedTuple):
    path: tuple[int | str, ...]  # under the rule: ("ports", 2), ("proto",)...
    message: str


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _protos(value: Any) -> list[Proto] | str | None:
    if value is None:
        return None
    items = _as_list(value)
    out: list[Proto] = []
    for item in items:
        if item not in ("tcp", "udp", "icmp", "any"):
            return f"unknown protocol {item!r} (use tcp, udp, icmp or any)"
        if item not in out:
            out.append(item)
    if not out:
        return "proto: the list is empty"
    if len(out) > 1 and any(p in ("icmp", "any") for p in out):
        return "proto: only tcp and udp can be listed together"
    return out


def _ports(value: Any) -> tuple[list[tuple[int, int]] | None, str | None, int]:
    """The port ranges, or the problem and the index of the bad item."""
    if value is None:
        return None, None, 0
    items = _as_list(value)
    if not items:
        return None, "ports: the list is empty", 0
    ranges: list[tuple[int, int]] = []
    for k, item in enumerate(items):
        if isinstance(item, bool):
            return None, f"port {item!r} is not a number", k
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str) and (m := _PORT_RANGE.fullmatch(item)):
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) else lo
        elif isinstance(item, str) and item in SERVICES:
            return None, (f"{item!r} is a service, not a port: list it under "
                          "services"), k
        else:
            return None, f"port {item!r} is not a number or a range like 8000-8010", k
        for p in (lo, hi):
            if not 1 <= p <= 65535:
                return None, f"port {p} is out of range 1-65535", k
        if lo > hi:
            return None, f"port range {item!r} runs backwards", k
        ranges.append((lo, hi))
    return ranges, None, 0


def _services(value: Any) -> tuple[list[str] | None, str | None, int]:
    if value is None:
        return None, None, 0
    items = _as_list(value)
    if not items:
        return None, "services: the list is empty", 0
    for k, item in enumerate(items):
        if not isinstance(item, str) or item not in SERVICES:
            close = difflib.get_close_matches(str(item), list(SERVICES), n=1)
            also = f" (did you mean {close[0]!r}?)" if close else ""
            return None, (f"unknown service {item!r}{also}; 'iotsec netseg services' "
                          "lists the known ones"), k
    return list(dict.fromkeys(items)), None, 0


def _merge_ports(ranges: list[tuple[int, int]]) -> PortRanges:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def parse_transport(proto: Any, ports: Any,
                    services: Any) -> tuple[PortMatch, ...] | TransportProblem:
    """The transport matches of a rule from its ``proto``, ``ports`` and ``services``
    values (each as read from the file), or the first problem with them."""
    def at(key: str, value: Any, k: int) -> tuple[int | str, ...]:
        return (key, k) if isinstance(value, list) else (key,)

    protos = _protos(proto)
    if isinstance(protos, str):
        return TransportProblem(("proto",), protos)
    port_ranges, problem, k = _ports(ports)
    if problem:
        return TransportProblem(at("ports", ports, k), problem)
    names, problem, k = _services(services)
    if problem:
        return TransportProblem(at("services", services, k), problem)
    if port_ranges is None and names is None:
        return tuple(PortMatch(p) for p in (protos or ["any"]))
    if protos is not None and protos[0] in ("icmp", "any"):
        what = "ICMP has no ports" if protos[0] == "icmp" else \
            "proto any cannot have ports or services; use tcp or udp"
        return TransportProblem(("proto",), what)
    by_proto: dict[Transport, list[tuple[int, int]]] = {}
    if port_ranges is not None:
        if protos is None:
            return TransportProblem(("ports",), "ports need a protocol: add proto: tcp or "
                                    "proto: udp")
        for p in protos:
            if p in ("tcp", "udp"):
                by_proto.setdefault(p, []).extend(port_ranges)
    for k, name in enumerate(names or []):
        service = SERVICES[name]
        chosen = [(t, n) for t, n in service.ports if protos is None or t in protos]
        if not chosen:
            spec = ", ".join(f"{n}/{t}" for t, n in service.ports)
            return TransportProblem(at("services", services, k),
                                    f"service {name!r} is {spec}, but the rule is proto "
                                    f"{'/'.join(protos or [])}")
        for t, n in chosen:
            by_proto.setdefault(t, []).append((n, n))
    out: list[PortMatch] = []
    for t in ("tcp", "udp"):
        if t in by_proto:
            out.append(PortMatch(t, _merge_ports(by_proto[t])))
    return tuple(out)


