"""The zone policy as typed values: zones, rules, firewall settings.

Objects are built only by ``iotsec.netseg.policy.parse_policy`` (or by code that already
holds valid parts), so everything downstream (the decision, the compiler, the findings)
trusts them: subnets do not overlap, rule endpoints name known zones, a rule's address
families are consistent and its ports are in range.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Action", "Address", "Endpoint", "EndpointKind", "Family", "Firewall", "Intervals", "Network",
    "Policy", "PortMatch", "PortRanges", "Proto", "Rule", "Zone", "covers", "intervals"
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Family = Literal[4, 6]
Proto = Literal["tcp", "udp", "icmp", "any"]
#: Inclusive port ranges, sorted and merged; ``None`` stands for every port.
PortRanges = tuple[tuple[int, int], ...]
#: Inclusive integer address ranges of one family, sorted and merged.
Intervals = tuple[tuple[int, int], ...]


class Action(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"  # dropped silently
    REJECT = "reject"  # refused with an ICMP "administratively prohibited"


class EndpointKind(enum.StrEnum):
    ANY = "any"
    SELF = "self"  # the firewall itself (its input chain)
    NETS = "nets"  # zones and/or CIDRs


def intervals(nets: tuple[Network, ...]) -> Intervals:
    """Sorted, merged inclusive integer ranges covering ``nets`` (all of one family)."""
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in nets)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def covers(outer: Intervals, inner: Intervals) -> bool:
    """Whether every range of ``inner`` lies inside a range of ``outer`` (both merged)."""
    i = 0
    for lo, hi in inner:
        while i < len(outer) and outer[i][1] < lo:
            i += 1
        if i == len(outer) or outer[i][0] > lo or outer[i][1] < hi:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    v4: tuple[ipaddress.IPv4Network, ...]
    v6: tuple[ipaddress.IPv6Network, ...]
    vlan: int | None = None
    interface: str | None = None
    admin: bool = False
    management: bool = False
    description: str = ""
    line: int | None = None

    @property
    def subnets(self) -> tuple[Network, ...]:
        return (*self.v4, *self.v6)

    def nets(self, family: int) -> tuple[Network, ...]:
        return self.v4 if family == 4 else self.v6


_BOTH = frozenset((4, 6))
_FAMILIES = {(True, True): _BOTH, (True, False): frozenset((4,)),
             (False, True): frozenset((6,)), (False, False): frozenset[int]()}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a rule: ``any``, ``self`` (the firewall), or zones and CIDRs."""

    kind: EndpointKind
    zones: tuple[str, ...] = ()
    cidrs: tuple[Network, ...] = ()
    v4: tuple[ipaddress.IPv4Network, ...] = ()  # the union of the zones' subnets and CIDRs
    v6: tuple[ipaddress.IPv6Network, ...] = ()
    v4_ranges: Intervals = ()
    v6_ranges: Intervals = ()

    @property
    def families(self) -> frozenset[int]:
        if self.kind is not EndpointKind.NETS:
            return _BOTH
        return _FAMILIES[(bool(self.v4), bool(self.v6))]

    def nets(self, family: int) -> tuple[Network, ...]:
        return self.v4 if family == 4 else self.v6

    def ranges(self, family: int) -> Intervals:
        return self.v4_ranges if family == 4 else self.v6_ranges

    @property
    def single_zone(self) -> str | None:
        """The zone name when the endpoint is exactly one zone (no CIDRs)."""
        return self.zones[0] if len(self.zones) == 1 and not self.cidrs else None

    @property
    def text(self) -> str:
        if self.kind is not EndpointKind.NETS:
            return self.kind.value
        return ", ".join([*self.zones, *(str(c) for c in self.cidrs)])


@dataclass(frozen=True, slots=True)
class PortMatch:
    """The transport part of a rule for one protocol."""

    proto: Proto
    ports: PortRanges | None = None  # None: every port (and always None for icmp/any)

    @property
    def text(self) -> str:
        if self.ports is None:
            return self.proto if self.proto != "any" else "any protocol"
        return f"{self.proto}/" + ",".join(str(a) if a == b else f"{a}-{b}"
                                           for a, b in self.ports)


@dataclass(frozen=True, slots=True)
class Rule:
    position: int  # 1-based, in file order: the first matching rule decides
    name: str
    action: Action
    src: Endpoint
    dst: Endpoint
    matches: tuple[PortMatch, ...]
    families: tuple[int, ...]  # (4,), (6,) or (4, 6): what the rule can ever match
    services: tuple[str, ...] = ()
    log: bool = False
    description: str = ""
    line: int | None = None

    @property
    def chain(self) -> Literal["forward", "input"]:
        return "input" if self.dst.kind is EndpointKind.SELF else "forward"

    @property
    def allows(self) -> bool:
        return self.action is Action.ALLOW

    @property
    def label(self) -> str:
        at = f" (line {self.line})" if self.line is not None else ""
        return f"rule {self.position} {self.name!r}{at}"


@dataclass(frozen=True, slots=True)
class Firewall:
    """Settings of the generated ruleset."""

    table: str = "iotsec"
    addresses: tuple[Address, ...] = ()  # the firewall's own addresses (input chain)
    log_drops: bool = False
    log_prefix: str = "iotsec drop: "
    anti_spoofing: bool = True


@dataclass(frozen=True)
class Policy:
    zones: tuple[Zone, ...]
    rules: tuple[Rule, ...]
    firewall: Firewall = field(default_factory=Firewall)
    digest: str = ""  # SHA-256 of the file it was read from
    by_name: Mapping[str, Zone] = field(default_factory=dict, repr=False)

    def zone(self, name: str) -> Zone:
        return self.by_name[name]

    def zone_of(self, address: Address) -> Zone | None:
        """The zone whose subnet holds ``address`` (subnets never overlap)."""
        for zone in self.zones:
            for net in zone.v4 if address.version == 4 else zone.v6:
                if address in net:
                    return zone
        return None

    @property
    def admin_zones(self) -> tuple[Zone, ...]:
        return tuple(z for z in self.zones if z.admin)
