"""Hypothesis strategies: random valid zone policies and random flows against them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from iotsec.netseg.decide import Flow
from iotsec.netseg.model import Policy
from iotsec.netseg.policy import parse_policy
from iotsec.netseg.services import SERVICES
from tests.netseg.support import doc

PORTS = [1, 22, 23, 53, 80, 123, 443, 514, 1883, 5683, 5684, 8000, 8005, 8010, 8883, 65535]
SERVICE_NAMES = sorted(SERVICES)
OUTSIDE_V4 = ["192.168.1.5", "172.16.0.1", "10.251.0.9", "8.8.8.8"]
OUTSIDE_V6 = ["fd99::1", "2001:db8::5"]


@dataclass(frozen=True)
class Case:
    policy: Policy
    data: bytes
    zones: list[dict[str, Any]]
    literals: list[str]


def _families(zone: dict[str, Any]) -> set[int]:
    return {ipaddress.ip_network(s).version for s in zone["subnets"]}


@st.composite
def policies(draw: st.DrawFn, max_rules: int = 8) -> Case:
    n = draw(st.integers(1, 4))
    zones: list[dict[str, Any]] = []
    for k in range(1, n + 1):
        v4 = draw(st.sampled_from(["none", "one", "split"]))
        subnets = {"none": [], "one": [f"10.250.{k}.0/24"],
                   "split": [f"10.250.{k}.0/25", f"10.250.{k + 100}.0/26"]}[v4]
        if draw(st.booleans()) or not subnets:
            subnets.append(f"fd00:250:{k}::/64")
        zone: dict[str, Any] = {"name": f"z{k}", "vlan": k, "subnets": subnets}
        if draw(st.booleans()):
            zone["interface"] = draw(st.sampled_from([f"vz{k}", "vshared"]))
        if k == 1 and draw(st.booleans()):
            zone["admin"] = True
        zones.append(zone)
    literals = ["10.250.0.0/16", "10.250.1.0/25", "10.0.0.0/8", "192.168.1.0/24",
                "10.250.2.7", "fd00:250::/32", "fd00:250:1::/80", "fd99::/64"]
    fw_addrs = draw(st.lists(st.sampled_from(["10.250.1.1", "10.250.2.1", "fd00:250:1::1",
                                              "10.250.9.1"]), unique=True, max_size=3))
    rules: list[dict[str, Any]] = []
    for r in range(draw(st.integers(0, max_rules))):
        def endpoint(side: str) -> tuple[Any, set[int]]:
            kind = draw(st.sampled_from(["zone", "zone", "list", "cidr", "any"] +
                                        (["self"] if side == "to" else [])))
            if kind == "any" or kind == "self":
                return kind, {4, 6}
            if kind == "cidr":
                cidr = draw(st.sampled_from(literals))
                return cidr, {ipaddress.ip_network(cidr).version}
            picked = draw(st.lists(st.sampled_from(zones), min_size=1,
                                   max_size=3 if kind == "list" else 1,
                                   unique_by=lambda z: z["name"]))
            fams = set().union(*(_families(z) for z in picked))
            names = [z["name"] for z in picked]
            if kind == "list" and draw(st.booleans()):
                cidr = draw(st.sampled_from(literals))
                names.append(cidr)
                fams.add(ipaddress.ip_network(cidr).version)
            return (names if kind == "list" else names[0]), fams

        src, sf = endpoint("from")
        dst, df = endpoint("to")
        lits = [x for e in (src, dst) for x in (e if isinstance(e, list) else [e])
                if x[0].isdigit() or ":" in x]
        lit_fams = {ipaddress.ip_network(x).version for x in lits}
        if len(lit_fams) > 1:
            continue
        common = sf & df & (lit_fams or {4, 6})
        if not common:
            continue
        rule: dict[str, Any] = {"name": f"r{r}",
                                "action": draw(st.sampled_from(["allow", "allow", "deny",
                                                                "reject"])),
                                "from": src, "to": dst}
        l4 = draw(st.sampled_from(["none", "proto", "ports", "services", "both"]))
        if l4 == "proto":
            rule["proto"] = draw(st.sampled_from(["tcp", "udp", "icmp", "any"]))
        elif l4 in ("ports", "both"):
            rule["proto"] = draw(st.sampled_from(["tcp", "udp", ["tcp", "udp"]]))
            rule["ports"] = draw(st.lists(st.sampled_from([*PORTS, "8000-8010", "20-25"]),
                                          min_size=1, max_size=3))
        if l4 in ("services", "both"):
            names = draw(st.lists(st.sampled_from(SERVICE_NAMES), min_size=1, max_size=3))
            if "proto" in rule:
                protos = rule["proto"] if isinstance(rule["proto"], list) else [rule["proto"]]
                names = [s for s in names if any(t in protos for t, _ in SERVICES[s].ports)]
            if names:
                rule["services"] = names
        if draw(st.integers(0, 9)) == 0:
            rule["log"] = True
        rules.append(rule)
    firewall = {"addresses": fw_addrs, "log_drops": draw(st.booleans()),
                "anti_spoofing": draw(st.booleans())}
    data = doc(zones, rules, firewall)
    return Case(parse_policy(data), data, zones, literals)


def _host_in(net: str, draw: st.DrawFn) -> str:
    n = ipaddress.ip_network(net)
    offset = draw(st.integers(0, min(n.num_addresses - 1, 2**16)))
    return str(n.network_address + offset)


@st.composite
def flows(draw: st.DrawFn, case: Case) -> Flow:
    family = draw(st.sampled_from([4, 6]))
    pool = [s for z in case.zones for s in z["subnets"]
            if ipaddress.ip_network(s).version == family]
    pool += [c for c in case.literals if ipaddress.ip_network(c).version == family]
    local = [str(a) for a in case.policy.firewall.addresses if a.version == family]
    outside = OUTSIDE_V4 if family == 4 else OUTSIDE_V6

    def address() -> str:
        kind = draw(st.sampled_from(["pool", "pool", "pool", "outside", "local"]))
        if kind == "local" and local:
            return draw(st.sampled_from(local))
        if kind == "outside" or not pool:
            return draw(st.sampled_from(outside))
        return _host_in(draw(st.sampled_from(pool)), draw)

    src, dst = address(), address()
    proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    port = None if proto == "icmp" else draw(st.one_of(st.sampled_from(PORTS),
                                                       st.integers(1, 65535)))
    return Flow.parse(src, dst, proto, port)
