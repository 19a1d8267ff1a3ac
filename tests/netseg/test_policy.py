"""Parsing zone policies: what is accepted, and how every bad input names its line."""

from __future__ import annotations

import ipaddress
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.errors import InputTooLargeError, NetsegPolicyError
from iotsec.netseg.model import Action, EndpointKind, PortMatch
from iotsec.netseg.policy import parse_policy
from iotsec.netseg.source import MAX_POLICY_BYTES, load_yaml
from tests.netseg.support import SITE, ZONES, doc, policy, problems_of

HEAD = """\
version: 1
zones:
  - name: sensors
    vlan: 20
    subnets: [10.20.0.0/24, "fd00:20::/64"]
  - name: broker
    vlan: 30
    subnets: [10.30.0.0/24, "fd00:30::/64"]
rules:
"""
# The first rule line of HEAD + rules is line 10.


def rule_error(rule_yaml: str) -> tuple[int | None, str]:
    err = problems_of(HEAD + rule_yaml)
    return err.problems[0]


def test_site_example_parses() -> None:
    p = parse_policy(SITE.read_bytes())
    assert [z.name for z in p.zones] == ["sensors", "broker", "gateways", "mgmt", "admin"]
    assert p.by_name["admin"].admin and p.by_name["mgmt"].management
    assert p.by_name["sensors"].interface == "eth0.20"
    first = p.rules[0]
    assert (first.name, first.action, first.src.zones, first.dst.zones) == (
        "sensors-to-broker", Action.ALLOW, ("sensors",), ("broker",))
    assert first.matches == (PortMatch("tcp", ((8883, 8883),)),)
    assert first.families == (4, 6)
    assert first.line == 32
    assert p.rules[3].dst.kind is EndpointKind.SELF and p.rules[3].chain == "input"
    assert p.rules[5].src.kind is EndpointKind.ANY
    dns = p.rules[4]
    assert dns.matches == (PortMatch("tcp", ((53, 53),)), PortMatch("udp", ((53, 53),
                                                                              (123, 123))))
    assert len(p.digest) == 64
    assert [str(a) for a in p.firewall.addresses][:2] == ["10.20.0.1", "10.30.0.1"]


def test_json_is_accepted_too() -> None:
    data = json.dumps({"zones": ZONES, "rules": [
        {"action": "allow", "from": "sensors", "to": "broker", "services": ["mqtts"]}]})
    p = parse_policy(data.encode())
    assert p.rules[0].name == "rule-1"


def test_ports_ranges_protocol_lists_and_services_merge() -> None:
    p = policy(ZONES, [{"name": "r", "action": "allow", "from": "sensors", "to": "broker",
                        "proto": ["tcp", "udp"], "ports": [8000, "8001-8010", 9000],
                        "services": ["dns"]}])
    assert p.rules[0].matches == (PortMatch("tcp", ((53, 53), (8000, 8010), (9000, 9000))),
                                  PortMatch("udp", ((53, 53), (8000, 8010), (9000, 9000))))


def test_mixed_zone_and_cidr_endpoint_restricts_families() -> None:
    p = policy(ZONES, [{"action": "allow", "from": ["sensors", "10.50.0.0/16"],
                        "to": "broker", "proto": "icmp"}])
    rule = p.rules[0]
    assert rule.families == (4,)
    assert rule.src.v4 == (ipaddress.ip_network("10.20.0.0/24"),
                           ipaddress.ip_network("10.50.0.0/16"))


# --- every bad input of the issue, each with its line ---------------------------------


def test_invalid_cidr_in_a_zone_names_its_line() -> None:
    err = problems_of(HEAD.replace("10.30.0.0/24", "10.30.0.300/24"))
    assert err.problems[0][0] == 8
    assert "invalid CIDR '10.30.0.300/24'" in str(err)
    assert str(err).startswith("line 8: ")


def test_cidr_with_host_bits_names_the_network() -> None:
    line, msg = rule_error("  - {action: allow, from: 10.20.0.5/24, to: broker, "
                           "proto: tcp, ports: [1]}\n")
    assert line == 10
    assert "host bits are set (the network is 10.20.0.0/24)" in msg


def test_invalid_cidr_in_a_rule() -> None:
    line, msg = rule_error("  - action: allow\n    from: sensors\n    to: 10.1.2/33\n"
                           "    services: [mqtts]\n")
    assert line == 12
    assert "invalid CIDR '10.1.2/33'" in msg


def test_ipv4_and_ipv6_mixed_in_one_rule() -> None:
    line, msg = rule_error("  - action: allow\n    from: 10.20.0.0/24\n    to: fd00:30::/64\n"
                           "    services: [mqtts]\n")
    assert line == 10
    assert "mixes IPv4 (10.20.0.0/24) and IPv6 (fd00:30::/64)" in msg


def test_rule_whose_zones_share_no_family() -> None:
    text = HEAD.replace('"fd00:30::/64"', "").replace("[10.20.0.0/24, ", "[")
    text = text.replace('[10.30.0.0/24, ]', "[10.30.0.0/24]")
    text = text.replace('["fd00:20::/64"]', '["fd00:20::/64"]')
    err = problems_of(text + "  - {action: allow, from: sensors, to: broker}\n")
    assert "share no address family" in str(err)
    assert err.problems[0][0] == 10


@pytest.mark.parametrize(("port", "shown"), [("0", "port 0 is out of range 1-65535"),
                                              ("70000", "port 70000 is out of range"),
                                              ('"0-80"', "port 0 is out of range"),
                                              ('"90-80"', "runs backwards"),
                                              ("web", "is not a number or a range"),
                                              ("mqtt", "is a service, not a port"),
                                              ("true", "is not a number")])
def test_bad_ports(port: str, shown: str) -> None:
    line, msg = rule_error("  - action: allow\n    from: sensors\n    to: broker\n"
                           f"    proto: tcp\n    ports:\n      - 443\n      - {port}\n")
    assert line == 16
    assert shown in msg


def test_unknown_service_suggests_the_right_one() -> None:
    line, msg = rule_error("  - action: allow\n    from: sensors\n    to: broker\n"
                           "    services: [mqtts, mqqt]\n")
    assert line == 13
    assert "unknown service 'mqqt' (did you mean 'mqtt'?)" in msg


def test_service_protocol_conflict() -> None:
    line, msg = rule_error("  - {action: allow, from: sensors, to: broker, proto: tcp, "
                           "services: [coap]}\n")
    assert line == 10
    assert "service 'coap' is 5683/udp, but the rule is proto tcp" in msg


@pytest.mark.parametrize(("extra", "shown"), [
    ("proto: icmp, ports: [1]", "ICMP has no ports"),
    ("proto: any, services: [ssh]", "proto any cannot have ports"),
    ("ports: [22]", "ports need a protocol"),
    ("proto: sctp", "unknown protocol 'sctp'"),
    ("proto: [tcp, icmp]", "only tcp and udp can be listed together"),
])
def test_bad_protocols(extra: str, shown: str) -> None:
    line, msg = rule_error(f"  - {{action: allow, from: sensors, to: broker, {extra}}}\n")
    assert line == 10
    assert shown in msg


def test_duplicate_zone_names() -> None:
    text = HEAD + "  - {action: allow, from: sensors, to: broker}\n"
    text = text.replace("  - name: broker", "  - name: sensors")
    err = problems_of(text)
    assert err.problems[0] == (6, "duplicate zone name 'sensors' (first defined on line 3)")


def test_duplicate_vlan_and_bad_vlan() -> None:
    err = problems_of(HEAD.replace("vlan: 30", "vlan: 20"))
    assert err.problems[0] == (7, "VLAN 20 of zone 'broker' is already used by zone 'sensors'")
    err = problems_of(HEAD.replace("vlan: 30", "vlan: 4095"))
    assert err.problems[0] == (7, "VLAN id 4095 is out of range 1-4094")


def test_overlapping_subnets_between_zones() -> None:
    err = problems_of(HEAD.replace("10.30.0.0/24", "10.20.0.128/25"))
    assert err.problems[0][0] == 8
    assert "subnet 10.20.0.128/25 of zone 'broker' overlaps 10.20.0.0/24 of zone 'sensors'" \
        in err.problems[0][1]


def test_overlapping_subnets_in_one_zone_and_ipv6() -> None:
    err = problems_of(HEAD.replace('"fd00:30::/64"', '"fd00:30::/64", "fd00:30::/48"'))
    assert err.problems[0][0] == 8
    assert "overlaps fd00:30::/64 of the same zone" in err.problems[0][1]


def test_unknown_zone_in_a_rule() -> None:
    line, msg = rule_error("  - action: allow\n    from: sensor\n    to: broker\n")
    assert line == 11
    assert "from: unknown zone 'sensor' (did you mean 'sensors'?)" in msg


def test_self_only_as_destination_and_any_alone() -> None:
    _, msg = rule_error("  - {action: allow, from: self, to: broker}\n")
    assert "'self' is not supported" in msg
    _, msg = rule_error("  - {action: allow, from: [any, sensors], to: broker}\n")
    assert "'any' cannot be combined" in msg


def test_ten_megabyte_file_is_refused_before_parsing() -> None:
    big = HEAD.encode() + b"#" * (10 * 1024 * 1024)
    with pytest.raises(InputTooLargeError) as info:
        parse_policy(big)
    assert f"the limit is {MAX_POLICY_BYTES}" in str(info.value)
    assert "nothing was parsed" in str(info.value)


def test_schema_errors_name_lines_and_keys() -> None:
    err = problems_of(HEAD + "  - action: permit\n    from: sensors\n    to: broker\n"
                      "  - from: sensors\n    to: broker\n    port: 22\n")
    messages = dict(err.problems)
    assert "rules[0].action: Input should be 'allow', 'deny' or 'reject' (got 'permit')" \
        in messages[10]
    assert any("rules[1].action: Field required" in m for m in messages.values())
    assert messages[15] == "rules[1].port: unknown key (check the spelling)"


def test_all_problems_are_collected() -> None:
    err = problems_of(HEAD + "  - {action: allow, from: nowhere, to: broker}\n"
                      "  - {action: allow, from: sensors, to: broker, services: [nope]}\n")
    assert [line for line, _ in err.problems] == [10, 11]
    assert "(and 1 more problem)" in str(err)


@pytest.mark.parametrize(("text", "line", "shown"), [
    ("a: &x 1\nb: *x\n", 1, "anchors and aliases are not allowed"),
    ("zones: []\nzones: []\n", 2, "duplicate key 'zones'"),
    ("zones: !!python/object:os.system []\n", 1, "YAML tags are not allowed"),
    ("zones: [\n", 2, "not valid YAML"),
    ("zones: []\n---\nrules: []\n", 2, "only one YAML document"),
    ("rules:\n  - name: 2024-13-45\n", 2, "not a valid value"),
    ("[" * 40 + "]" * 40, 1, "nested deeper than"),
])
def test_unsafe_or_broken_yaml(text: str, line: int, shown: str) -> None:
    err = problems_of(text)
    assert err.problems[0][0] == line
    assert shown in err.problems[0][1]


def test_not_utf8_and_not_a_mapping() -> None:
    err = problems_of(b"zones: []\nrules: [\xff]\n")
    assert err.problems[0][0] == 2
    assert "not UTF-8" in str(err)
    assert "must be a mapping" in str(problems_of("- a\n- b\n"))


def test_empty_file_is_an_empty_policy() -> None:
    p = parse_policy(b"# nothing yet\n")
    assert p.zones == () and p.rules == ()


def test_line_numbers_follow_the_file() -> None:
    src = load_yaml(b"a:\n  b:\n    - x\n    - {c: 1}\n")
    assert src.line(["a"]) == 2
    assert src.line(["a", "b", 1, "c"]) == 4
    assert src.line(["a", "missing"]) == 2
    assert src.line([]) == 1


# --- Hypothesis: whatever the bytes, the parser refuses cleanly or returns a policy -----


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    outcome: object
    try:
        outcome = parse_policy(data)
    except (NetsegPolicyError, InputTooLargeError) as exc:
        outcome = exc
    if isinstance(outcome, Exception):
        assert str(outcome)


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000),
                    st.sampled_from(["sensors", "broker", "any", "self", "10.20.0.0/24",
                                     "fd00:20::/64", "10.0.0.1/8", "tcp", "udp", "icmp",
                                     "mqtt", "mqtts", "coap", "allow", "deny", "reject",
                                     "1-10", "x", ""]))
_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["name", "from", "to", "proto", "ports", "services",
                                     "action", "subnets", "vlan", "admin", "zones",
                                     "rules", "interface", "log"]), inner, max_size=5)),
    max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zones=st.lists(st.dictionaries(st.sampled_from(["name", "vlan", "subnets", "admin",
                                                       "interface"]), _value, max_size=5),
                      max_size=3),
       rules=st.lists(st.dictionaries(st.sampled_from(["name", "action", "from", "to",
                                                       "proto", "ports", "services"]),
                                      _value, max_size=7), max_size=4))
def test_random_structures_are_refused_with_a_line_or_parsed(zones: list[object],
                                                             rules: list[object]) -> None:
    data = yaml.safe_dump({"version": 1, "zones": zones, "rules": rules}).encode()
    try:
        p = parse_policy(data)
    except NetsegPolicyError as exc:
        problems = exc.problems
    else:
        assert len(p.rules) == len(rules)
        return
    assert problems
    assert all(line is None or line >= 1 for line, _ in problems)
    assert all(msg for _, msg in problems)


def test_doc_helper_round_trips() -> None:
    p = parse_policy(doc(ZONES, []))
    assert len(p.zones) == 4


# Control characters and line separators are left out: PyYAML folds some of them (NEL)
# when reading back, which can turn two distinct keys into duplicates.
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
_yaml_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         _text,
                         st.sampled_from(["yes", "no", "on", "off", "~", "null", "1_000",
                                          "0x1f", "0o17", "1:20", "2024-01-02", ".inf",
                                          "-.5", "+3", "=", "<<", "10.0.0.0/8", "fd00::1"]))
_yaml_value = st.recursive(_yaml_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_yaml_value, st.booleans())
def test_loader_builds_what_the_safe_loader_builds(value: object, flow: bool) -> None:
    """The event-based builder gives the same data as PyYAML's own safe loader."""
    text = yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True)
    assert load_yaml(text.encode()).data == yaml.safe_load(text)


@pytest.mark.parametrize("plain", ["yes", "No", "on", "OFF", "~", "null", "1_000", "0x1f",
                                   "0o17", "017", "1:20", "2024-01-02", "2024-01-02 10:00:00",
                                   ".inf", "-.5", "+3", "=", "1e3", "true", "t", "y", "abc",
                                   "10.0.0.0/8", "fd00::1", "-", "0"])
def test_plain_scalars_resolve_like_the_safe_loader(plain: str) -> None:
    text = f"a: {plain}\nb: [{plain}]\n"
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError:
        with pytest.raises(NetsegPolicyError):
            load_yaml(text.encode())
        return
    assert load_yaml(text.encode()).data == expected
