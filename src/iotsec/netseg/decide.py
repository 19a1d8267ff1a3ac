"""The ``check`` decision: what the compiled firewall does with the first packet of a flow.

Semantics (the same as the generated nftables ruleset):

- A packet to one of ``firewall.addresses`` is judged by the input chain (rules whose
  ``to`` is ``self``); any other packet by the forward chain (all other rules).
- Rules are tried in file order; the first rule whose source, destination, protocol and
  port all match decides (allow, deny or reject). No match: default deny.
- Replies and related ICMP of an allowed flow pass through connection tracking, so a
  decision is about the side that opens the flow.
- A flow is assumed to arrive on the interface of its source's zone: anti-spoofing only
  drops packets whose source does not belong where they came from, which a flow named by
  addresses alone cannot express.

``Decider`` answers from an index (per family, address ranges split into elementary
segments that each carry the bitmask of the rules matching there; likewise for ports), so
a query costs a few binary searches and integer ANDs whatever the number of rules.
``decide_linear`` is the plain first-match scan, kept as the reference.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from iotsec.errors import InvalidInputError
from iotsec.netseg.model import (
    Action,
    Address,
    EndpointKind,
    Intervals,
    Policy,
    PortMatch,
    Rule,
    Zone,
)

__all__ = ["Chain", "Decider", "Decision", "Flow", "FlowProto", "decide_linear", "rule_matches"]

FlowProto = Literal["tcp", "udp", "icmp"]
Chain = Literal["forward", "input"]


@dataclass(frozen=True, slots=True)
class Flow:
    """The first packet of a connection: source, destination, protocol, destination port."""

    src: Address
    dst: Address
    proto: FlowProto = "tcp"
    port: int | None = None

    @classmethod
    def parse(cls, src: str, dst: str, proto: str = "tcp", port: int | None = None) -> Flow:
        """Validate a flow given as text; raises ``InvalidInputError`` naming the problem."""
        try:
            s = ipaddress.ip_address(src.strip())
        except ValueError:
            raise InvalidInputError(f"--from {src!r} is not an IP address",
                                    hint="give one address, e.g. 10.20.0.5") from None
        try:
            d = ipaddress.ip_address(dst.strip())
        except ValueError:
            raise InvalidInputError(f"--to {dst!r} is not an IP address",
                                    hint="give one address, e.g. 10.30.0.10") from None
        if s.version != d.version:
            raise InvalidInputError(f"--from {s} and --to {d} are of different address "
                                    "families", hint="use two IPv4 or two IPv6 addresses")
        if proto not in ("tcp", "udp", "icmp"):
            raise InvalidInputError(f"unknown protocol {proto!r}", hint="use tcp, udp or icmp")
        if proto == "icmp":
            if port is not None:
                raise InvalidInputError("ICMP has no ports", hint="leave out --port")
            return cls(s, d, "icmp", None)
        if port is None:
            raise InvalidInputError(f"{proto} needs a destination port", hint="add --port N")
        if not 1 <= port <= 65535:
            raise InvalidInputError(f"port {port} is out of range 1-65535")
        return cls(s, d, "tcp" if proto == "tcp" else "udp", port)


class Decision(NamedTuple):
    action: Action
    rule: Rule | None  # None: no rule matched (default deny)
    chain: Chain

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW

    @property
    def reason(self) -> str:
        if self.rule is None:
            return f"no rule matches ({self.chain} chain default: deny)"
        return f"{self.rule.label} ({self.chain} chain)"


def _port_matches(m: PortMatch, flow: Flow) -> bool:
    if m.proto == "any":
        return True
    if m.proto != flow.proto:
        return False
    if m.ports is None or flow.port is None:
        return True
    return any(lo <= flow.port <= hi for lo, hi in m.ports)


def rule_matches(rule: Rule, flow: Flow, chain: Chain) -> bool:
    """Whether ``rule`` matches ``flow`` in ``chain`` (the plain, unindexed test)."""
    f = flow.src.version
    if rule.chain != chain or f not in rule.families:
        return False
    if rule.src.kind is EndpointKind.NETS and \
            not any(flow.src in n for n in rule.src.nets(f)):
        return False
    if chain == "forward" and rule.dst.kind is EndpointKind.NETS and \
            not any(flow.dst in n for n in rule.dst.nets(f)):
        return False
    return any(_port_matches(m, flow) for m in rule.matches)


def _chain(policy: Policy, flow: Flow) -> Chain:
    return "input" if flow.dst in policy.firewall.addresses else "forward"


def decide_linear(policy: Policy, flow: Flow) -> Decision:
    """The reference decision: scan every rule in order."""
    chain = _chain(policy, flow)
    for rule in policy.rules:
        if rule_matches(rule, flow, chain):
            return Decision(rule.action, rule, chain)
    return Decision(Action.DENY, None, chain)


class _SegmentIndex:
    """Maps a point (address or port) to the bitmask of the entries whose ranges hold it."""

    def __init__(self, entries: Iterable[tuple[Intervals | None, int]]) -> None:
        every = 0
        by_ranges: dict[Intervals, int] = {}
        for ranges, bit in entries:
            if ranges is None:
                every |= bit
            else:
                by_ranges[ranges] = by_ranges.get(ranges, 0) | bit
        points = sorted({p for ranges in by_ranges for lo, hi in ranges for p in (lo, hi + 1)})
        masks = [every] * (len(points) + 1)
        for ranges, mask in by_ranges.items():
            for lo, hi in ranges:
                for k in range(bisect.bisect_right(points, lo),
                               bisect.bisect_right(points, hi) + 1):
                    masks[k] |= mask
        self._points = points
        self._masks = masks

    def __call__(self, point: int) -> int:
        return self._masks[bisect.bisect_right(self._points, point)]


class _FamilyIndex:
    def __init__(self, rules: tuple[Rule, ...], family: int) -> None:
        fwd = [(i, r) for i, r in enumerate(rules) if family in r.families
               and r.chain == "forward"]
        inp = [(i, r) for i, r in enumerate(rules) if family in r.families
               and r.chain == "input"]

        def side(pairs: list[tuple[int, Rule]], which: str) -> _SegmentIndex:
            out: list[tuple[Intervals | None, int]] = []
            for i, r in pairs:
                ep = r.src if which == "src" else r.dst
                out.append((ep.ranges(family) if ep.kind is EndpointKind.NETS else None,
                            1 << i))
            return _SegmentIndex(out)

        self.fwd_src = side(fwd, "src")
        self.fwd_dst = side(fwd, "dst")
        self.in_src = side(inp, "src")
        ports: dict[str, list[tuple[Intervals | None, int]]] = {"tcp": [], "udp": []}
        icmp = 0
        for i, r in enumerate(rules):
            if family not in r.families:
                continue
            for m in r.matches:
                if m.proto == "any":
                    icmp |= 1 << i
                    ports["tcp"].append((None, 1 << i))
                    ports["udp"].append((None, 1 << i))
                elif m.proto == "icmp":
                    icmp |= 1 << i
                else:
                    ports[m.proto].append((m.ports, 1 << i))
        self.tcp = _SegmentIndex(ports["tcp"])
        self.udp = _SegmentIndex(ports["udp"])
        self.icmp = icmp


class Decider:
    """Answers ``check`` for one policy; build once, ask many times."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._rules = policy.rules
        self._local = frozenset(policy.firewall.addresses)
        self._families = {4: _FamilyIndex(policy.rules, 4), 6: _FamilyIndex(policy.rules, 6)}
        self._zones: dict[int, tuple[list[int], list[tuple[int, Zone]]]] = {}
        for f in (4, 6):
            spans = sorted((int(n.network_address), int(n.broadcast_address), z)
                           for z in policy.zones for n in (z.v4 if f == 4 else z.v6))
            self._zones[f] = ([s[0] for s in spans], [(s[1], s[2]) for s in spans])

    def decide(self, flow: Flow) -> Decision:
        index = self._families[flow.src.version]
        src = int(flow.src)
        if flow.proto == "icmp":
            l4 = index.icmp
        else:
            l4 = (index.tcp if flow.proto == "tcp" else index.udp)(flow.port or 0)
        if flow.dst in self._local:
            chain: Chain = "input"
            mask = index.in_src(src) & l4
        else:
            chain = "forward"
            mask = index.fwd_src(src) & l4
            if mask:
                mask &= index.fwd_dst(int(flow.dst))
        if not mask:
            return Decision(Action.DENY, None, chain)
        rule = self._rules[(mask & -mask).bit_length() - 1]
        return Decision(rule.action, rule, chain)

    def zone_of(self, address: Address) -> Zone | None:
        """The zone whose subnet holds ``address``."""
        starts, ends = self._zones[address.version]
        k = bisect.bisect_right(starts, int(address)) - 1
        if k >= 0 and int(address) <= ends[k][0]:
            return ends[k][1]
        return None
