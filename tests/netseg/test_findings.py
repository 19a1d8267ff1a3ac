"""Findings: shadowed rules, plaintext protocols, management access, and the rest."""

from __future__ import annotations

from typing import Any

from iotsec.findings.model import Finding, Severity
from iotsec.netseg.findings import review
from iotsec.netseg.policy import parse_policy
from tests.netseg.support import SITE, ZONES, policy

WIRED = [{**z, "interface": f"eth0.{z['vlan']}"} for z in ZONES] + [
    {"name": "mgmt", "vlan": 98, "subnets": ["10.98.0.0/24"], "interface": "eth0.98",
     "management": True}]


def findings(rules: list[dict[str, Any]], zones: list[dict[str, Any]] | None = None,
             **firewall: Any) -> list[Finding]:
    return review(policy(zones or WIRED, rules, firewall or None))


def codes(found: list[Finding]) -> list[tuple[str, str | None, Severity]]:
    return [(f.rule.code, f.location.name, f.severity) for f in found]


def test_the_example_site_is_clean() -> None:
    assert review(parse_policy(SITE.read_bytes())) == []


def test_shadowed_by_an_opposite_verdict_is_medium() -> None:
    found = findings([
        {"name": "deny-all", "action": "deny", "from": "sensors", "to": "any"},
        {"name": "mqtts", "action": "allow", "from": "sensors", "to": "broker",
         "services": ["mqtts"]},
    ])
    shadow = [f for f in found if f.rule.code == "shadowed-rule"]
    assert [(f.location.name, f.severity) for f in shadow] == [("mqtts", Severity.MEDIUM)]
    assert "rule 1 'deny-all'" in shadow[0].message and shadow[0].location.line is not None


def test_redundant_rule_is_low_and_partial_overlap_is_not_flagged() -> None:
    found = findings([
        {"name": "wide", "action": "allow", "from": "10.20.0.0/16", "to": "broker",
         "proto": "tcp", "ports": ["8000-9000"]},
        {"name": "narrow", "action": "allow", "from": "sensors", "to": "broker",
         "services": ["mqtts"]},
        {"name": "partly", "action": "allow", "from": "sensors", "to": "broker",
         "proto": "tcp", "ports": ["8500-9500"]},
    ])
    shadow = [(f.location.name, f.severity) for f in found if f.rule.code == "shadowed-rule"]
    # 'narrow' covers IPv4 and IPv6 of sensors, 'wide' only IPv4: not shadowed.
    assert shadow == []
    found = findings([
        {"name": "wide", "action": "allow", "from": "any", "to": "broker", "proto": "tcp",
         "ports": ["8000-9000"]},
        {"name": "narrow", "action": "allow", "from": ["sensors", "gateways"],
         "to": "broker", "services": ["mqtts"]},
        {"name": "partly", "action": "allow", "from": "sensors", "to": "broker",
         "proto": "tcp", "ports": ["8500-9500"]},
    ])
    shadow = [(f.location.name, f.severity) for f in found if f.rule.code == "shadowed-rule"]
    assert shadow == [("narrow", Severity.LOW)]


def test_shadowing_per_family_and_chain() -> None:
    found = findings([
        {"name": "v4", "action": "deny", "from": "10.0.0.0/8", "to": "any"},
        {"name": "gw", "action": "allow", "from": "gateways", "to": "broker",
         "services": ["mqtts"]},  # gateways are IPv4 only: covered
        {"name": "fw", "action": "allow", "from": "gateways", "to": "self",
         "services": ["dns"]},  # input chain: not covered by a forward rule
    ])
    assert [(f.location.name) for f in found if f.rule.code == "shadowed-rule"] == ["gw"]


def test_plaintext_protocols() -> None:
    found = findings([
        {"name": "telnet", "action": "allow", "from": "admin", "to": "gateways",
         "services": ["telnet"]},
        {"name": "mqtt", "action": "allow", "from": "sensors", "to": "broker",
         "proto": "tcp", "ports": [1883]},
        {"name": "web", "action": "allow", "from": "gateways", "to": "broker",
         "services": ["http", "coap"]},
        {"name": "tls", "action": "allow", "from": "gateways", "to": "broker",
         "services": ["https", "coaps", "mqtts"]},
        {"name": "denied", "action": "deny", "from": "gateways", "to": "broker",
         "services": ["telnet"]},
    ])
    plain = {f.location.name: f for f in found if f.rule.code == "plaintext-protocol"}
    assert set(plain) == {"telnet", "mqtt", "web"}
    assert plain["telnet"].severity is Severity.HIGH
    assert plain["mqtt"].severity is Severity.MEDIUM
    assert "mqtt (1883/tcp)" in plain["mqtt"].message
    assert "http (80/tcp)" in plain["web"].message and "coap (5683/udp)" in plain["web"].message


def test_management_access_from_outside_the_admin_zone() -> None:
    found = findings([
        {"name": "admin-ssh", "action": "allow", "from": "admin", "to": "gateways",
         "services": ["ssh"]},
        {"name": "gw-ssh", "action": "allow", "from": "sensors", "to": "gateways",
         "services": ["ssh"]},
        {"name": "any-snmp", "action": "allow", "from": "any", "to": "self",
         "services": ["snmp"]},
        {"name": "mixed", "action": "allow", "from": ["admin", "sensors"], "to": "gateways",
         "proto": "tcp", "ports": [3389]},
    ])
    mgmt = {f.location.name: f for f in found if f.rule.code == "management-access"}
    assert set(mgmt) == {"gw-ssh", "any-snmp", "mixed"}
    assert all(f.severity is Severity.HIGH for f in mgmt.values())
    assert "admin zone (admin)" in mgmt["gw-ssh"].fix


def test_management_zone_reached_only_from_admins() -> None:
    found = findings([
        {"name": "ok", "action": "allow", "from": "admin", "to": "mgmt", "services": "https"},
        {"name": "bad", "action": "allow", "from": "sensors", "to": "mgmt",
         "services": "https"},
        {"name": "cidr", "action": "allow", "from": "gateways", "to": "10.98.0.0/16",
         "services": "https"},
        {"name": "wide", "action": "allow", "from": "gateways", "to": "any",
         "services": "https"},
    ])
    zone = {f.location.name: f.severity for f in found if f.rule.code == "management-zone"}
    assert zone == {"bad": Severity.HIGH, "cidr": Severity.HIGH, "wide": Severity.MEDIUM}
    # The usual ordering: deny into the management zone first, then allow to any.
    found = findings([
        {"name": "guard", "action": "deny", "from": "any", "to": "mgmt"},
        {"name": "wide", "action": "allow", "from": "gateways", "to": "any",
         "services": "https"},
    ])
    assert not [f for f in found if f.rule.code == "management-zone"]


def test_no_admin_zone_changes_the_advice() -> None:
    zones = [z for z in WIRED if not z.get("admin")]
    found = findings([{"name": "s", "action": "allow", "from": "sensors", "to": "gateways",
                       "services": "ssh"}], zones)
    f = next(f for f in found if f.rule.code == "management-access")
    assert "mark the administrators' zone with admin: true" in f.fix


def test_all_ports_allow_from_any_and_intra_zone() -> None:
    found = findings([
        {"name": "tcp", "action": "allow", "from": "sensors", "to": "broker", "proto": "tcp"},
        {"name": "web", "action": "allow", "from": "any", "to": "broker", "services": "https"},
        {"name": "self", "action": "allow", "from": "sensors", "to": "sensors",
         "services": "coaps"},
        {"name": "ping", "action": "allow", "from": "sensors", "to": "broker",
         "proto": "icmp"},
        {"name": "open", "action": "allow", "from": "any", "to": "broker"},
    ])
    got = codes(found)
    assert ("all-ports", "open", Severity.HIGH) in got
    assert ("all-ports", "tcp", Severity.MEDIUM) in got
    assert ("management-access", "open", Severity.HIGH) in got
    assert ("allow-from-any", "web", Severity.LOW) in got
    assert ("intra-zone", "self", Severity.INFO) in got
    assert not any(c[1] == "ping" for c in got)


def test_policy_wide_findings() -> None:
    found = findings([{"name": "fw", "action": "deny", "from": "sensors", "to": "self"}],
                     ZONES)
    got = {f.rule.code for f in found}
    assert {"no-anti-spoofing", "no-firewall-addresses", "nothing-allowed",
            "unused-zone"} <= got
    unused = sorted(f.message for f in found if f.rule.code == "unused-zone")
    assert len(unused) == 3 and "'admin'" in unused[0]
