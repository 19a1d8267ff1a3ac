"""The ``check`` decision on a known site, and flow parsing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.errors import InvalidInputError
from iotsec.netseg.decide import Decider, Flow, decide_linear
from iotsec.netseg.model import Action
from iotsec.netseg.policy import parse_policy
from tests.netseg.strategies import Case, flows, policies
from tests.netseg.support import SITE, ZONES, policy


@pytest.fixture(scope="module")
def site() -> Decider:
    return Decider(parse_policy(SITE.read_bytes()))


@pytest.mark.parametrize(("src", "dst", "proto", "port", "action", "rule", "chain"), [
    ("10.20.0.5", "10.30.0.9", "tcp", 8883, "allow", "sensors-to-broker", "forward"),
    ("fd00:20::5", "fd00:30::9", "tcp", 8883, "allow", "sensors-to-broker", "forward"),
    ("10.20.0.5", "10.30.0.9", "tcp", 1883, "deny", None, "forward"),
    ("10.30.0.9", "10.20.0.5", "tcp", 8883, "deny", None, "forward"),  # direction matters
    ("10.40.0.5", "10.30.0.9", "udp", 5684, "allow", "gateways-to-broker", "forward"),
    ("10.40.0.5", "10.30.0.9", "tcp", 5684, "deny", None, "forward"),
    ("10.99.0.7", "10.98.0.2", "tcp", 22, "allow", "admin-ssh", "forward"),
    ("10.20.0.5", "10.98.0.2", "tcp", 22, "deny", None, "forward"),
    ("10.99.0.7", "10.20.0.1", "tcp", 443, "allow", "admin-firewall", "input"),
    ("10.20.0.5", "10.20.0.1", "tcp", 22, "deny", None, "input"),
    ("10.20.0.5", "10.20.0.1", "udp", 123, "allow", "dns-ntp", "input"),
    ("fd00:20::5", "fd00:20::1", "tcp", 53, "allow", "dns-ntp", "input"),
    ("10.40.0.5", "10.30.0.9", "tcp", 23, "reject", "no-telnet", "forward"),
    ("192.168.7.7", "10.30.0.9", "tcp", 23, "reject", "no-telnet", "forward"),
    ("10.20.0.5", "10.30.0.9", "icmp", None, "deny", None, "forward"),
])
def test_site_decisions(site: Decider, src: str, dst: str, proto: str, port: int | None,
                        action: str, rule: str | None, chain: str) -> None:
    d = site.decide(Flow.parse(src, dst, proto, port))
    assert (d.action.value, d.rule.name if d.rule else None, d.chain) == (action, rule, chain)
    assert d.allowed == (action == "allow")


def test_first_match_wins_and_zone_lookup() -> None:
    p = policy(ZONES, [
        {"name": "no-ssh", "action": "deny", "from": "any", "to": "broker", "services": "ssh"},
        {"name": "all", "action": "allow", "from": "sensors", "to": "broker", "proto": "tcp"},
    ])
    d = Decider(p)
    assert d.decide(Flow.parse("10.20.0.1", "10.30.0.1", "tcp", 22)).rule.name == "no-ssh"
    assert d.decide(Flow.parse("10.20.0.1", "10.30.0.1", "tcp", 2222)).rule.name == "all"
    assert d.decide(Flow.parse("10.20.0.1", "10.30.0.1", "udp", 2222)).action is Action.DENY
    assert d.zone_of(Flow.parse("10.40.0.200", "10.40.0.1", "icmp").src).name == "gateways"
    assert d.zone_of(Flow.parse("10.41.0.1", "10.40.0.1", "icmp").src) is None
    assert "default: deny" in d.decide(Flow.parse("10.20.0.1", "10.30.0.1", "udp", 1)).reason


@pytest.mark.parametrize(("args", "shown"), [
    (("10.0.0.1", "nope", "tcp", 1), "--to 'nope' is not an IP address"),
    (("10.0.0.300", "10.0.0.1", "tcp", 1), "--from '10.0.0.300' is not an IP address"),
    (("10.0.0.1", "fd00::1", "tcp", 1), "different address families"),
    (("10.0.0.1", "10.0.0.2", "tcp", None), "tcp needs a destination port"),
    (("10.0.0.1", "10.0.0.2", "udp", 0), "port 0 is out of range"),
    (("10.0.0.1", "10.0.0.2", "udp", 70000), "port 70000 is out of range"),
    (("10.0.0.1", "10.0.0.2", "icmp", 8), "ICMP has no ports"),
    (("10.0.0.1", "10.0.0.2", "gre", 1), "unknown protocol"),
])
def test_bad_flows(args: tuple[str, str, str, int | None], shown: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Flow.parse(*args)
    assert shown in str(info.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=policies(max_rules=14))
def test_index_agrees_with_the_linear_scan(data: st.DataObject, case: Case) -> None:
    decider = Decider(case.policy)
    for _ in range(30):
        flow = data.draw(flows(case))
        ours, ref = decider.decide(flow), decide_linear(case.policy, flow)
        assert (ours.action, ours.rule, ours.chain) == (ref.action, ref.rule, ref.chain)
