"""Findings on a valid zone policy: what a segmentation review would flag.

- ``shadowed-rule``: a rule that never matches because one earlier rule matches every flow
  it would (medium when the earlier rule has the opposite verdict, so the later rule's
  intent is lost; low when it is merely redundant). Coverage by a single earlier rule is
  detected; a rule covered only by several earlier rules together is not.
- ``plaintext-protocol``: an allow that opens Telnet, MQTT 1883, HTTP, CoAP without DTLS or
  another protocol that carries credentials or data in clear text (high for Telnet).
- ``management-access``: an allow that opens a management protocol (SSH, Telnet, SNMP,
  RDP, VNC, NETCONF, IPMI, WinRM) to sources outside the admin zones.
- ``management-zone``: an allow into a zone marked ``management: true`` from outside the
  admin zones.
- ``all-ports``: an allow without a port restriction (high from ``any``).
- ``allow-from-any``: an allow whose source is every address.
- ``intra-zone``: a rule from a zone to itself, which the router never sees for hosts on
  one link (isolate them on the switch instead).
- ``no-anti-spoofing``: zones without an ``interface``, whose source addresses the
  firewall has to take on trust.
- ``unused-zone``, ``no-firewall-addresses``, ``nothing-allowed``: informational.

Findings are the shared :class:`~iotsec.findings.model.Finding`: each code is a rule
``netseg/<code>`` (:data:`REVIEW_RULES`), and a finding's location is the rule's name and
line in the policy file (:meth:`~iotsec.findings.model.Location.zone_rule`; a zone's line
alone for ``unused-zone``, neither for the policy-wide findings).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from iotsec.findings.model import Finding, Location, Severity
from iotsec.findings.model import Rule as ReviewRule
from iotsec.netseg.model import (
    Endpoint,
    EndpointKind,
    Intervals,
    Policy,
    PortMatch,
    Rule,
    Zone,
    covers,
    intervals,
)
from iotsec.netseg.services import MANAGEMENT_PORTS, PLAINTEXT_PORTS, Transport

__all__ = ["REVIEW_RULES", "review", "review_json"]

SHADOWED_RULE = ReviewRule(
    "netseg/shadowed-rule", "Rule that never matches", Severity.LOW,
    "An earlier rule matches every flow this rule would match, so it never applies (medium "
    "when the earlier rule has the opposite verdict and this rule's intent is lost).",
    "remove the rule")
PLAINTEXT_PROTOCOL = ReviewRule(
    "netseg/plaintext-protocol", "Plaintext protocol allowed", Severity.MEDIUM,
    "An allow opens a protocol that carries credentials or data in clear text (Telnet, MQTT "
    "1883, HTTP, CoAP without DTLS...); high for Telnet.",
    "use the TLS/DTLS variant (mqtts 8883, https 443, coaps 5684, ssh 22)")
MANAGEMENT_ACCESS = ReviewRule(
    "netseg/management-access", "Management protocol open outside the admin zone",
    Severity.HIGH,
    "An allow opens a management protocol (SSH, Telnet, SNMP, RDP, VNC, NETCONF, IPMI, "
    "WinRM) to sources outside the admin zones.",
    "allow it from the admin zone only")
MANAGEMENT_ZONE = ReviewRule(
    "netseg/management-zone", "Management zone reachable from outside the admin zone",
    Severity.HIGH,
    "An allow reaches a zone marked management: true from sources outside the admin zones.",
    "allow it from the admin zone only")
ALL_PORTS = ReviewRule(
    "netseg/all-ports", "Allow without a port restriction", Severity.MEDIUM,
    "An allow without a port restriction opens every service of the destination, plaintext "
    "and management ones included (high from any address).",
    "list the services the devices need")
ALLOW_FROM_ANY = ReviewRule(
    "netseg/allow-from-any", "Allow from every address", Severity.LOW,
    "An allow whose source is every address.",
    "name the zones or networks that need it")
INTRA_ZONE = ReviewRule(
    "netseg/intra-zone", "Rule from a zone to itself", Severity.INFO,
    "Hosts on one link talk directly, so the router never sees the traffic this rule is "
    "about.",
    "isolate devices on the switch (private VLAN / port isolation)")
UNUSED_ZONE = ReviewRule(
    "netseg/unused-zone", "Zone named by no rule", Severity.INFO,
    "A zone that no rule names: all its traffic is denied.",
    "remove it, or add the flows it needs")
NO_ANTI_SPOOFING = ReviewRule(
    "netseg/no-anti-spoofing", "Zones without an interface", Severity.LOW,
    "Zones without an interface, whose source addresses the firewall has to take on trust.",
    "set interface: on each zone (e.g. eth0.20 for VLAN 20)")
NO_FIREWALL_ADDRESSES = ReviewRule(
    "netseg/no-firewall-addresses", "Firewall addresses unknown", Severity.INFO,
    "Rules to 'self' exist but firewall.addresses is empty, so 'check' treats every "
    "destination as forwarded.",
    "list the firewall's own addresses under firewall.addresses")
NOTHING_ALLOWED = ReviewRule(
    "netseg/nothing-allowed", "Nothing allowed", Severity.INFO,
    "No rule allows anything: the firewall drops every new flow.",
    "add allow rules for the flows the devices need")
REVIEW_RULES = (SHADOWED_RULE, PLAINTEXT_PROTOCOL, MANAGEMENT_ACCESS, MANAGEMENT_ZONE,
                ALL_PORTS, ALLOW_FROM_ANY, INTRA_ZONE, UNUSED_ZONE, NO_ANTI_SPOOFING,
                NO_FIREWALL_ADDRESSES, NOTHING_ALLOWED)


def review_json(finding: Finding) -> dict[str, Any]:
    """A review finding as ``iotsec netseg validate --json`` shows it: severity, code (the
    rule's name without ``netseg/``), rule name, line, message, fix."""
    return {"severity": finding.severity.value, "code": finding.rule.code,
            "rule": finding.location.name, "line": finding.location.line,
            "message": finding.message, "fix": finding.fix}


def _at(rule: Rule) -> Location:
    return Location.zone_rule(rule.name, rule.line)


# The policy-wide findings are about no rule and no line.
_POLICY = Location.zone_rule(None, None)


_ANY = ("any",)


def _key(endpoint: Endpoint, family: int) -> tuple[object, ...]:
    if endpoint.kind is EndpointKind.ANY:
        return _ANY
    if endpoint.kind is EndpointKind.SELF:
        return ("self",)
    return endpoint.ranges(family)


def _l4_covers(outer: tuple[PortMatch, ...], inner: tuple[PortMatch, ...]) -> bool:
    for m in inner:
        ok = False
        for o in outer:
            if o.proto == "any" or (o.proto == m.proto and (
                    o.ports is None or (m.ports is not None and covers(o.ports, m.ports)))):
                ok = True
                break
        if not ok:
            return False
    return True


def _side_covers(outer: Endpoint, inner: Endpoint, family: int) -> bool:
    if outer.kind is EndpointKind.ANY:
        return True
    if outer.kind is EndpointKind.SELF:
        return inner.kind is EndpointKind.SELF
    if inner.kind is not EndpointKind.NETS:
        return False
    return covers(outer.ranges(family), inner.ranges(family))


def rule_covers(outer: Rule, inner: Rule) -> bool:
    """Whether every flow ``inner`` matches is matched by ``outer``."""
    if outer.chain != inner.chain or not set(inner.families) <= set(outer.families):
        return False
    return all(_side_covers(outer.src, inner.src, f) and
               (inner.chain == "input" or _side_covers(outer.dst, inner.dst, f))
               for f in inner.families) and _l4_covers(outer.matches, inner.matches)


class _Supersets:
    """For one address family: which distinct endpoint ranges cover a given one."""

    def __init__(self) -> None:
        self._spans: list[tuple[int, int, Intervals]] = []
        self._cache: dict[tuple[object, ...], list[tuple[object, ...]]] = {}
        self._known: set[tuple[object, ...]] = set()

    def add(self, key: tuple[object, ...]) -> None:
        if key in self._known:
            return
        self._known.add(key)
        self._cache.clear()
        if key not in (_ANY, ("self",)) and key:
            ranges: Intervals = key  # type: ignore[assignment]
            bisect.insort(self._spans, (ranges[0][0], ranges[-1][1], ranges))

    def of(self, key: tuple[object, ...]) -> list[tuple[object, ...]]:
        found = self._cache.get(key)
        if found is not None:
            return found
        out: list[tuple[object, ...]] = []
        if key == ("self",):
            out = [key]
        else:
            out = [_ANY]
            if key != _ANY and key:
                ranges: Intervals = key  # type: ignore[assignment]
                lo, hi = ranges[0][0], ranges[-1][1]
                for s_lo, s_hi, cand in self._spans:
                    if s_lo > lo:
                        break
                    if s_hi >= hi and covers(cand, ranges):
                        out.append(cand)
        self._cache[key] = out
        return out


def _shadowed(policy: Policy) -> Iterable[Finding]:
    # Rules are indexed by (source key, destination key) per family; a candidate that
    # could cover rule j has keys that cover j's keys in every family j uses.
    index: dict[tuple[int, tuple[object, ...], tuple[object, ...]], list[int]] = {}
    supersets = {4: _Supersets(), 6: _Supersets()}
    rules = policy.rules
    for f in (4, 6):
        for rule in rules:
            if f in rule.families:
                supersets[f].add(_key(rule.src, f))
                supersets[f].add(_key(rule.dst, f))
    for j, rule in enumerate(rules):
        candidates: set[int] | None = None
        for f in rule.families:
            found: set[int] = set()
            for s in supersets[f].of(_key(rule.src, f)):
                for d in supersets[f].of(_key(rule.dst, f)):
                    found.update(index.get((f, s, d), ()))
            candidates = found if candidates is None else candidates & found
        for i in sorted(candidates or ()):
            earlier = rules[i]
            if rule_covers(earlier, rule):
                opposite = earlier.allows != rule.allows
                yield SHADOWED_RULE.at(
                    _at(rule), f"{rule.label} never matches: {earlier.label} above it "
                    f"already {earlier.action.value}s every flow it would match",
                    severity=Severity.MEDIUM if opposite else Severity.LOW,
                    fix="move it above the broader rule" if opposite else "remove the rule")
                break
        for f in rule.families:
            index.setdefault((f, _key(rule.src, f), _key(rule.dst, f)), []).append(j)


def _open_ports(rule: Rule, table: Mapping[tuple[Transport, int], str]) -> list[str]:
    found: list[str] = []
    for m in rule.matches:
        for (proto, port), name in table.items():
            if m.proto == "any" or (m.proto == proto and (
                    m.ports is None or any(lo <= port <= hi for lo, hi in m.ports))):
                label = f"{name} ({port}/{proto})"
                if label not in found:
                    found.append(label)
    return found


def _all_ports(rule: Rule) -> bool:
    return any(m.proto == "any" or (m.proto != "icmp" and m.ports is None)
               for m in rule.matches)


def _from_admin(policy: Policy, rule: Rule) -> bool:
    if rule.src.kind is not EndpointKind.NETS:
        return False
    for f in rule.families:
        admin = intervals(tuple(n for z in policy.admin_zones for n in
                                (z.v4 if f == 4 else z.v6)))
        if not covers(admin, rule.src.ranges(f)):
            return False
    return True


def _reaches_zone(rule: Rule, policy: Policy, zone_name: str) -> bool:
    if rule.dst.kind is EndpointKind.ANY:
        return True
    if rule.dst.kind is EndpointKind.SELF:
        return False
    if zone_name in rule.dst.zones:
        return True
    zone = policy.zone(zone_name)
    return any(c.overlaps(n) for c in rule.dst.cidrs for n in zone.subnets
               if c.version == n.version)


def _blocked_above(policy: Policy, rule: Rule, zone: Zone) -> bool:
    """Whether an earlier deny/reject already stops every flow of ``rule`` into ``zone``
    (the usual "deny to management, then allow to any" ordering)."""
    if rule.dst.kind is not EndpointKind.ANY:
        return False
    families = tuple(f for f in rule.families if zone.nets(f))
    if not families:
        return True
    v4, v6 = zone.v4, zone.v6
    narrowed = replace(rule, families=families, dst=Endpoint(
        EndpointKind.NETS, zones=(zone.name,), v4=v4, v6=v6, v4_ranges=intervals(v4),
        v6_ranges=intervals(v6)))
    return any(not r.allows and rule_covers(r, narrowed)
               for r in policy.rules[:rule.position - 1])


def _allow_findings(policy: Policy, rule: Rule) -> Iterable[Finding]:
    where = f"from {rule.src.text} to {rule.dst.text}"
    admin_names = ", ".join(z.name for z in policy.admin_zones)
    admin_fix = (f"allow it from the admin zone ({admin_names}) only" if admin_names else
                 "mark the administrators' zone with admin: true and allow it from there only")
    if _all_ports(rule):
        yield ALL_PORTS.at(
            _at(rule),
            f"{rule.label} allows every port {where}, including Telnet, MQTT 1883 and HTTP",
            severity=Severity.HIGH if rule.src.kind is EndpointKind.ANY else Severity.MEDIUM)
    else:
        plain = _open_ports(rule, PLAINTEXT_PORTS)
        if plain:
            telnet = any(p.startswith("telnet") for p in plain)
            yield PLAINTEXT_PROTOCOL.at(
                _at(rule), f"{rule.label} opens plaintext {', '.join(plain)} {where}",
                severity=Severity.HIGH if telnet else Severity.MEDIUM)
    if not _from_admin(policy, rule):
        mgmt = _open_ports(rule, MANAGEMENT_PORTS)
        if mgmt:
            yield MANAGEMENT_ACCESS.at(
                _at(rule), f"{rule.label} opens management access ({', '.join(mgmt)}) "
                f"{where}, outside the admin zone", fix=admin_fix)
        for zone in policy.zones:
            if zone.management and _reaches_zone(rule, policy, zone.name) and \
                    not _blocked_above(policy, rule, zone):
                yield MANAGEMENT_ZONE.at(
                    _at(rule), f"{rule.label} lets {rule.src.text} reach management zone "
                    f"{zone.name!r}", fix=admin_fix,
                    severity=Severity.HIGH if rule.dst.kind is EndpointKind.NETS
                    else Severity.MEDIUM)
    if rule.src.kind is EndpointKind.ANY and not _all_ports(rule):
        yield ALLOW_FROM_ANY.at(
            _at(rule), f"{rule.label} accepts {rule.dst.text} traffic from every address")


def review(policy: Policy) -> list[Finding]:
    """Every finding on ``policy``, in rule order, then the policy-wide ones."""
    out: list[Finding] = list(_shadowed(policy))
    shadowed = {f.location.name for f in out}
    used: set[str] = set()
    for rule in policy.rules:
        used.update(rule.src.zones)
        used.update(rule.dst.zones)
        if rule.allows and rule.name not in shadowed:
            out.extend(_allow_findings(policy, rule))
        if rule.src.single_zone is not None and rule.src.single_zone == rule.dst.single_zone:
            out.append(INTRA_ZONE.at(
                _at(rule), f"{rule.label} is from zone {rule.src.single_zone!r} to itself: "
                "hosts on one link talk directly and the firewall never sees it"))
    for zone in policy.zones:
        if zone.name not in used:
            out.append(UNUSED_ZONE.at(
                Location.zone_rule(None, zone.line),
                f"zone {zone.name!r} is named by no rule (all its traffic is denied)"))
    bare = [z.name for z in policy.zones if z.interface is None]
    if bare and policy.zones:
        shown = ", ".join(bare[:5]) + (f" and {len(bare) - 5} more" if len(bare) > 5 else "")
        out.append(NO_ANTI_SPOOFING.at(
            _POLICY, f"{len(bare)} zone(s) have no interface ({shown}): the firewall cannot "
            "tell a spoofed source address from a real one"))
    if any(r.chain == "input" for r in policy.rules) and not policy.firewall.addresses:
        out.append(NO_FIREWALL_ADDRESSES.at(
            _POLICY, "rules to 'self' exist but firewall.addresses is empty: 'check' treats "
            "every destination as forwarded"))
    if not any(r.allows for r in policy.rules):
        out.append(NOTHING_ALLOWED.at(
            _POLICY, "no rule allows anything: the firewall drops every new flow"))
    return out
