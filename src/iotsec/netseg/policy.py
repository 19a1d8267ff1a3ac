"""Parsing a zone policy file into a ``Policy``, with the line of every problem.

The file (YAML, or JSON which is YAML too)::

    version: 1
    firewall:                      # optional
      table: iotsec                # nftables table name
      addresses: [10.20.0.1]       # the firewall's own addresses (traffic to them: input)
      log_drops: true              # log (rate-limited) what the default deny drops
      log_prefix: "iotsec drop: "
      anti_spoofing: true          # drop packets whose source does not fit the interface
    zones:
      - name: sensors
        vlan: 20
        subnets: [10.20.0.0/24, "fd00:20::/64"]
        interface: eth0.20         # optional: enables anti-spoofing for the zone
      - name: admin
        vlan: 99
        subnets: [10.99.0.0/24]
        admin: true                # management access is expected from here only
    rules:                         # first match wins; anything not allowed is dropped
      - name: sensors-to-broker
        action: allow              # allow | deny | reject
        from: sensors              # zone, CIDR, any, or a list of zones and CIDRs
        to: broker                 # ... or self (the firewall itself)
        services: [mqtts]          # and/or proto: tcp|udp|icmp|any with ports: [8883, 9000-9010]

``from`` is the side that opens the connection; replies are let through by connection
tracking, so a rule never needs a mirror image. Every problem is collected (up to
:data:`~iotsec.netseg.problems.MAX_PROBLEMS`) and raised together in one ``NetsegPolicyError``.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import re
from typing import Any

from pydantic import ValidationError

from iotsec.errors import NetsegPolicyError
from iotsec.netseg.model import (
    Action,
    Address,
    Endpoint,
    EndpointKind,
    Firewall,
    Network,
    Policy,
    Rule,
    Zone,
    intervals,
)
from iotsec.netseg.problems import POLICY_HINT, Problems
from iotsec.netseg.schema import PolicyDoc, RuleDoc, ZoneDoc
from iotsec.netseg.source import MAX_POLICY_BYTES, Source, load_yaml
from iotsec.netseg.transport import TransportProblem, parse_transport

__all__ = ["parse_policy"]

_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}")
_LOG_PREFIX = re.compile(r"[A-Za-z0-9 _.:,/=-]{1,64}")
_RESERVED = {"any", "self", "all", "none"}


def _network(text: Any) -> Network | str:
    """A network from ``text``, or the reason it is not one."""
    if not isinstance(text, str):
        return f"{text!r} is not a CIDR (write it as text, e.g. 10.20.0.0/24)"
    candidate = text.strip()
    if "%" in candidate:
        return f"{text!r}: scoped IPv6 addresses are not allowed in a policy"
    try:
        return ipaddress.ip_network(candidate, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(candidate, strict=False)
        except ValueError:
            return f"invalid CIDR {text!r}: {exc}"
        return f"invalid CIDR {text!r}: host bits are set (the network is {loose})"


def _address(text: Any) -> Address | str:
    if not isinstance(text, str):
        return f"{text!r} is not an IP address"
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return f"invalid IP address {text!r}"


def _looks_like_address(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or any(c in text for c in ".:/"))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class _Parser:
    def __init__(self, source: Source, doc: PolicyDoc) -> None:
        self.source = source
        self.doc = doc
        self.problems = Problems(source)
        self.zones: dict[str, Zone] = {}
        self.broken_zones: set[str] = set()  # zones already reported as invalid
        self.zone_docs: list[tuple[int, ZoneDoc]] = []
        self.rule_docs: list[tuple[int, RuleDoc]] = []
        for i, item in enumerate(doc.zones):
            try:
                self.zone_docs.append((i, ZoneDoc.model_validate(item)))
            except ValidationError as exc:
                self.problems.add_schema(exc, ["zones", i])
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    self.broken_zones.add(item["name"])
        for i, item in enumerate(doc.rules):
            try:
                self.rule_docs.append((i, RuleDoc.model_validate(item)))
            except ValidationError as exc:
                self.problems.add_schema(exc, ["rules", i])
        self._endpoint_cache: dict[tuple[str, tuple[str, ...]], Endpoint | str] = {}

    # --- firewall ---------------------------------------------------------------------

    def firewall(self) -> Firewall:
        fw = self.doc.firewall
        base: list[int | str] = ["firewall"]
        if not _TABLE_NAME.fullmatch(fw.table):
            self.problems.add([*base, "table"], f"table name {fw.table!r} must be a letter "
                              "then up to 31 letters, digits or '_'")
        if not _LOG_PREFIX.fullmatch(fw.log_prefix):
            self.problems.add([*base, "log_prefix"], f"log prefix {fw.log_prefix!r} must be "
                              "1-64 letters, digits, spaces or _.:,/=-")
        addresses: list[Address] = []
        for i, text in enumerate(fw.addresses):
            addr = _address(text)
            if isinstance(addr, str):
                self.problems.add([*base, "addresses", i], addr)
            elif addr in addresses:
                self.problems.add([*base, "addresses", i], f"address {addr} is listed twice")
            else:
                addresses.append(addr)
        return Firewall(table=fw.table, addresses=tuple(addresses), log_drops=fw.log_drops,
                        log_prefix=fw.log_prefix, anti_spoofing=fw.anti_spoofing)

    # --- zones ------------------------------------------------------------------------

    def parse_zones(self) -> None:
        vlans: dict[int, str] = {}
        placed: list[tuple[Network, str, int, int]] = []  # network, zone, zone index, subnet
        for i, zd in self.zone_docs:
            at: list[int | str] = ["zones", i]
            name = zd.name
            if not _ZONE_NAME.fullmatch(name):
                self.problems.add([*at, "name"], f"zone name {name!r} must be a letter then up "
                                  "to 31 letters, digits, '_' or '-'")
                continue
            if name.lower() in _RESERVED:
                self.problems.add([*at, "name"], f"zone name {name!r} is reserved")
                continue
            if name in self.zones:
                first = self.zones[name].line
                self.problems.add([*at, "name"], f"duplicate zone name {name!r} (first "
                                  f"defined on line {first})")
                continue
            if zd.vlan is not None:
                if not 1 <= zd.vlan <= 4094:
                    self.problems.add([*at, "vlan"], f"VLAN id {zd.vlan} is out of range "
                                      "1-4094")
                elif zd.vlan in vlans:
                    self.problems.add([*at, "vlan"], f"VLAN {zd.vlan} of zone {name!r} is "
                                      f"already used by zone {vlans[zd.vlan]!r}")
                else:
                    vlans[zd.vlan] = name
            if zd.interface is not None and not _INTERFACE.fullmatch(zd.interface):
                self.problems.add([*at, "interface"], f"interface name {zd.interface!r} must "
                                  "be 1-15 letters, digits or _.:-")
            v4: list[ipaddress.IPv4Network] = []
            v6: list[ipaddress.IPv6Network] = []
            for j, text in enumerate(zd.subnets):
                net = _network(text)
                if isinstance(net, str):
                    self.problems.add([*at, "subnets", j], net)
                    continue
                placed.append((net, name, i, j))
                if isinstance(net, ipaddress.IPv4Network):
                    v4.append(net)
                else:
                    v6.append(net)
            self.zones[name] = Zone(
                name=name, v4=tuple(v4), v6=tuple(v6), vlan=zd.vlan, interface=zd.interface,
                admin=zd.admin, management=zd.management, description=zd.description,
                line=self.source.line(at))
        self._check_overlaps(placed)

    def _check_overlaps(self, placed: list[tuple[Network, str, int, int]]) -> None:
        # Sorted by (family, first address), a network overlaps an earlier one exactly when
        # it starts before the furthest end seen so far.
        ordered = sorted(placed, key=lambda p: (p[0].version, int(p[0].network_address)))
        reach: tuple[Network, str, int, int] | None = None
        for item in ordered:
            net, zone, i, j = item
            if reach is not None and reach[0].version == net.version and \
                    int(net.network_address) <= int(reach[0].broadcast_address):
                other, other_zone, oi, oj = reach
                where = "the same zone" if other_zone == zone else f"zone {other_zone!r}"
                first, second = sorted([(i, j, net, zone), (oi, oj, other, other_zone)],
                                       key=lambda t: (t[0], t[1]))
                self.problems.add(["zones", second[0], "subnets", second[1]],
                                  f"subnet {second[2]} of zone {second[3]!r} overlaps "
                                  f"{first[2]} of {where}")
                if int(net.broadcast_address) <= int(other.broadcast_address):
                    continue
            reach = item

    # --- rules ------------------------------------------------------------------------

    def _endpoint(self, side: str, value: Any) -> Endpoint | str:
        items = _as_list(value)
        if not items:
            return f"{side}: the list is empty"
        if not all(isinstance(x, str) for x in items):
            bad = next(x for x in items if not isinstance(x, str))
            return f"{side}: {bad!r} is not a zone name, a CIDR, 'any' or 'self'"
        key = (side, tuple(items))
        cached = self._endpoint_cache.get(key)
        if cached is None:
            cached = self._endpoint_cache[key] = self._build_endpoint(side, items)
        return cached

    def _build_endpoint(self, side: str, items: list[str]) -> Endpoint | str:
        words = [x.strip() for x in items]
        for special in ("any", "self"):
            if special in words:
                if special == "self" and side == "from":
                    return ("from: 'self' is not supported: the firewall's own outgoing "
                            "traffic is not filtered")
                if len(words) > 1:
                    return f"{side}: {special!r} cannot be combined with other entries"
                return Endpoint(EndpointKind(special))
        zones: list[str] = []
        cidrs: list[Network] = []
        for word in words:
            if word in self.zones:
                if word not in zones:
                    zones.append(word)
            elif _looks_like_address(word):
                net = _network(word)
                if isinstance(net, str):
                    return f"{side}: {net}"
                if net not in cidrs:
                    cidrs.append(net)
            elif word in self.broken_zones:
                return ""  # the zone's own problem is reported already
            else:
                close = difflib.get_close_matches(word, list(self.zones), n=1)
                also = f" (did you mean {close[0]!r}?)" if close else ""
                return f"{side}: unknown zone {word!r}{also}"
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for name in zones:
            v4.extend(self.zones[name].v4)
            v6.extend(self.zones[name].v6)
        for net in cidrs:
            if isinstance(net, ipaddress.IPv4Network):
                v4.append(net)
            else:
                v6.append(net)
        if len(zones) + len(cidrs) > 1:
            v4 = list(ipaddress.collapse_addresses(v4))
            v6 = list(ipaddress.collapse_addresses(v6))
        return Endpoint(EndpointKind.NETS, zones=tuple(zones), cidrs=tuple(cidrs),
                        v4=tuple(v4), v6=tuple(v6), v4_ranges=intervals(tuple(v4)),
                        v6_ranges=intervals(tuple(v6)))

    def parse_rules(self) -> list[Rule]:
        rules: list[Rule] = []
        names: dict[str, int | None] = {}
        lines = self.source.item_lines("rules")
        for i, rd in self.rule_docs:
            at: list[int | str] = ["rules", i]
            line = lines[i] if i < len(lines) else None
            name = rd.name if rd.name is not None else f"rule-{i + 1}"
            ok = True
            if not _RULE_NAME.fullmatch(name):
                self.problems.add([*at, "name"], f"rule name {name!r} must be 1-64 letters, "
                                  "digits or _.:- starting with a letter or digit")
                ok = False
            elif name in names:
                self.problems.add([*at, "name"], f"duplicate rule name {name!r} (first on "
                                  f"line {names[name]})")
                ok = False
            else:
                names[name] = line
            src = self._endpoint("from", rd.from_)
            if isinstance(src, str):
                if src:
                    self.problems.add([*at, "from"], src)
                ok = False
            dst = self._endpoint("to", rd.to)
            if isinstance(dst, str):
                if dst:
                    self.problems.add([*at, "to"], dst)
                ok = False
            matches = parse_transport(rd.proto, rd.ports, rd.services)
            if isinstance(matches, TransportProblem):
                self.problems.add([*at, *matches.path], matches.message)
                continue
            if not ok or isinstance(src, str) or isinstance(dst, str):
                continue
            families = self._families(at, src, dst)
            if families is None:
                continue
            rules.append(Rule(
                position=i + 1, name=name, action=Action(rd.action), src=src, dst=dst,
                matches=matches, families=families,
                services=tuple(_as_list(rd.services)) if rd.services is not None else (),
                log=rd.log, description=rd.description, line=line))
        return rules

    def _families(self, at: list[int | str], src: Endpoint,
                  dst: Endpoint) -> tuple[int, ...] | None:
        literal = [*src.cidrs, *dst.cidrs]
        versions = {c.version for c in literal}
        if len(versions) > 1:
            v4 = next(c for c in literal if c.version == 4)
            v6 = next(c for c in literal if c.version == 6)
            self.problems.add(at, f"the rule mixes IPv4 ({v4}) and IPv6 ({v6}) addresses; "
                              "write one rule per address family")
            return None
        common = src.families & dst.families
        if literal:
            common &= versions
        if not common:
            def only(e: Endpoint) -> str:
                fams = e.families & versions if e.cidrs else e.families
                return "/".join(f"IPv{f}" for f in sorted(fams)) or "no address"

            self.problems.add(at, f"from ({src.text}: {only(src)}) and to ({dst.text}: "
                              f"{only(dst)}) share no address family, so the rule can "
                              "never match")
            return None
        return tuple(sorted(common))


def parse_policy(data: bytes, *, limit: int = MAX_POLICY_BYTES) -> Policy:
    """Parse and validate a zone policy file (at most ``limit`` bytes).

    Raises ``InputTooLargeError`` for an oversized file (before parsing) and
    ``NetsegPolicyError`` listing every problem with its line.
    """
    source = load_yaml(data, limit=limit)
    raw = source.data if source.data is not None else {}
    if not isinstance(raw, dict):
        raise NetsegPolicyError("line 1: the policy file must be a mapping with zones: and "
                                "rules:", hint=POLICY_HINT, problems=((1, "not a mapping"),))
    # An empty section ("rules:" with nothing under it yet) reads as null: take it as empty.
    raw = {k: ([] if v is None and k in ("zones", "rules") else v) for k, v in raw.items()
           if not (v is None and k == "firewall")}
    try:
        doc = PolicyDoc.model_validate(raw)
    except ValidationError as exc:
        problems = Problems(source)
        problems.add_schema(exc)
        problems.raise_if_any()
        raise  # pragma: no cover (raise_if_any raised)
    parser = _Parser(source, doc)
    firewall = parser.firewall()
    parser.parse_zones()
    rules = parser.parse_rules()
    parser.problems.raise_if_any()
    zones = tuple(parser.zones.values())
    return Policy(zones=zones, rules=tuple(rules), firewall=firewall,
                  digest=hashlib.sha256(data).hexdigest(),
                  by_name={z.name: z for z in zones})
