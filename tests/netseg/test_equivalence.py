"""``check`` and the compiled ruleset make the same decision for every flow.

The compiled text is evaluated by the interpreter of the nftables subset (which reads the
text, not the compiler's data); the indexed ``Decider`` is also held to the plain
first-match scan. ``nft -c -f`` accepts what the compiler emits for random policies.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.netseg.decide import Decider, Decision, Flow, decide_linear
from iotsec.netseg.interp import Packet, Ruleset
from iotsec.netseg.model import Action, Policy
from iotsec.netseg.nftables import DEFAULT_COMMENT, SPOOF_COMMENT, compile_nftables
from tests.netseg.strategies import Case, flows, policies
from tests.netseg.support import nft_check_text, require_root_tools

VERDICT = {Action.ALLOW: "accept", Action.DENY: "drop", Action.REJECT: "reject"}


def packet_for(policy: Policy, flow: Flow, decider: Decider, *,
               iifname: str | None = None) -> Packet:
    """The packet of ``flow``, arriving on the interface of its source's zone (or an
    interface of no zone)."""
    if iifname is None:
        zone = decider.zone_of(flow.src)
        iifname = (zone.interface if zone is not None and zone.interface else "wan0")
    l4 = flow.proto if flow.proto != "icmp" else ("icmp" if flow.src.version == 4
                                                  else "ipv6-icmp")
    return Packet(flow.src, flow.dst, l4, flow.port, iifname=iifname,  # type: ignore[arg-type]
                  icmp_type="echo-request" if flow.proto == "icmp" else None)


def assert_same(decision: Decision, verdict_action: str, comment: str | None) -> None:
    assert verdict_action == VERDICT[decision.action], (decision, verdict_action, comment)
    expected = f"rule {decision.rule.name}" if decision.rule else DEFAULT_COMMENT
    assert comment == expected, (decision.reason, comment)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), case=policies())
def test_check_agrees_with_the_compiled_ruleset(data: st.DataObject, case: Case) -> None:
    ruleset = Ruleset(compile_nftables(case.policy))
    decider = Decider(case.policy)
    local = set(case.policy.firewall.addresses)
    for _ in range(25):
        flow = data.draw(flows(case))
        decision = decider.decide(flow)
        reference = decide_linear(case.policy, flow)
        assert (decision.action, decision.rule, decision.chain) == \
            (reference.action, reference.rule, reference.chain)
        verdict = ruleset.evaluate(packet_for(case.policy, flow, decider), local=local)
        assert verdict.chain == decision.chain
        assert_same(decision, verdict.action, verdict.comment)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=policies())
def test_spoofed_sources_are_dropped_on_zone_interfaces(data: st.DataObject,
                                                        case: Case) -> None:
    """A packet whose source does not belong to the zone(s) of the interface it came in on
    is dropped by anti-spoofing (when enabled), whatever the rules say."""
    policy = case.policy
    ruleset = Ruleset(compile_nftables(policy))
    decider = Decider(policy)
    local = set(policy.firewall.addresses)
    wired = [z for z in policy.zones if z.interface]
    for _ in range(10):
        flow = data.draw(flows(case))
        if not wired:
            return
        zone = data.draw(st.sampled_from(wired))
        home = decider.zone_of(flow.src)
        verdict = ruleset.evaluate(packet_for(policy, flow, decider,
                                              iifname=zone.interface), local=local)
        on_iface = {z.name for z in wired if z.interface == zone.interface}
        spoofed = home is None or home.name not in on_iface
        if flow.dst in local and flow.src.is_link_local:
            spoofed = False
        if spoofed and policy.firewall.anti_spoofing:
            assert (verdict.action, verdict.comment) == ("drop", SPOOF_COMMENT)
        else:
            assert_same(decider.decide(flow), verdict.action, verdict.comment)


def test_replies_and_invalid_packets_do_not_meet_the_rules() -> None:
    from iotsec.netseg.policy import parse_policy
    from tests.netseg.support import SITE

    policy = parse_policy(SITE.read_bytes())
    ruleset = Ruleset(compile_nftables(policy))
    flow = Flow.parse("10.30.0.9", "10.20.0.5", "tcp", 40000)  # broker -> sensor: denied
    decider = Decider(policy)
    new = packet_for(policy, flow, decider)
    assert ruleset.evaluate(new).action == "drop"
    from dataclasses import replace

    assert ruleset.evaluate(replace(new, ct_state="established")).action == "accept"
    assert ruleset.evaluate(replace(new, ct_state="invalid")).action == "drop"
    # IPv6 neighbour discovery reaches the firewall whatever the rules say.
    nd = Packet(Flow.parse("fe80::1", "fd00:20::1", "icmp").src,
                Flow.parse("fe80::1", "fd00:20::1", "icmp").dst, "ipv6-icmp",
                iifname="eth0.20", icmp_type="nd-neighbor-solicit", hoplimit=255)
    local = set(policy.firewall.addresses)
    assert ruleset.evaluate(nd, local=local).action == "accept"
    assert ruleset.evaluate(replace(nd, hoplimit=64), local=local).action == "drop"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=policies(max_rules=12))
def test_nft_accepts_the_compiled_ruleset(case: Case) -> None:
    nft = require_root_tools("nft")["nft"]
    text = compile_nftables(case.policy)
    result = nft_check_text(nft, text)
    assert result.returncode == 0, (result.stderr, text)
