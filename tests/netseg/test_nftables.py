"""The compiled ruleset: its shape, nft's acceptance, and the interpreter's strictness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.app import netseg as service
from iotsec.errors import NftError
from iotsec.netseg.decide import Flow
from iotsec.netseg.interp import Packet, Ruleset, RulesetSyntaxError
from iotsec.netseg.nftables import compile_nftables
from iotsec.netseg.policy import parse_policy
from tests.netseg.support import SITE, ZONES, nft_check_text, policy, require_root_tools


@pytest.fixture(scope="module")
def site_text() -> str:
    return compile_nftables(parse_policy(SITE.read_bytes()))


def test_shape_of_the_ruleset(site_text: str) -> None:
    lines = [line.strip() for line in site_text.splitlines()]
    assert lines[3:5] == ["table inet iotsec", "delete table inet iotsec"]
    assert "set z_sensors_v4 {" in lines and "set z_sensors_v6 {" in lines
    assert "set z_gateways_v6 {" not in lines  # no IPv6 subnet, no set
    assert "type filter hook forward priority filter; policy drop;" in lines
    assert "type filter hook input priority filter; policy drop;" in lines
    fwd = lines[lines.index("chain forward {"):lines.index("chain input {")]
    assert fwd[2:4] == ["ct state established,related counter accept",
                        "ct state invalid counter drop"]
    assert 'iifname "eth0.20" ip saddr != @z_sensors_v4 counter drop comment ' \
        '"anti-spoofing"' in fwd
    assert 'ip saddr @z_sensors_v4 ip daddr @z_broker_v4 tcp dport 8883 counter accept ' \
        'comment "rule sensors-to-broker"' in fwd
    assert 'ip6 saddr @z_sensors_v6 ip6 daddr @z_broker_v6 tcp dport 8883 counter accept ' \
        'comment "rule sensors-to-broker"' in fwd
    assert 'ip saddr @z_admin_v4 ip daddr { 10.30.0.0/24, 10.40.0.0/24, 10.98.0.0/24 } ' \
        'tcp dport 22 counter accept comment "rule admin-ssh"' in fwd
    assert 'tcp dport 23 counter reject with icmpx type admin-prohibited comment ' \
        '"rule no-telnet"' in fwd
    assert fwd[-3:] == ['limit rate 10/second burst 20 packets log prefix "iotsec drop: "',
                        'counter drop comment "default deny"', "}"]
    inp = lines[lines.index("chain input {"):]
    assert 'iif "lo" accept' in inp
    assert 'ip saddr @z_admin_v4 tcp dport { 22, 443 } counter accept comment ' \
        '"rule admin-firewall"' in inp
    assert not any("rule admin-firewall" in line for line in fwd)


def test_options_change_the_output() -> None:
    p = policy(ZONES, [{"name": "logged", "action": "allow", "from": "sensors",
                        "to": "broker", "services": "mqtts", "log": True},
                       {"name": "web", "action": "allow", "from": "any", "to": "any",
                        "services": "https"},
                       {"name": "ping", "action": "allow", "from": "any", "to": "any",
                        "proto": "icmp"}],
               {"table": "site_a", "log_drops": False, "anti_spoofing": False})
    text = compile_nftables(p)
    assert "table inet site_a {" in text
    assert "log prefix \"iotsec drop" not in text
    assert "anti-spoofing" not in text
    assert 'ip saddr @z_sensors_v4 ip daddr @z_broker_v4 tcp dport 8883 limit rate ' \
        '10/second burst 20 packets log prefix "site_a logged: "' in text
    # Both endpoints 'any': one line for both families.
    assert '\t\ttcp dport 443 counter accept comment "rule web"' in text
    assert 'meta l4proto { icmp, ipv6-icmp } counter accept comment "rule ping"' in text


def test_interpreter_reads_counters_and_logs(site_text: str) -> None:
    rs = Ruleset(site_text)
    p = parse_policy(SITE.read_bytes())
    flow = Flow.parse("10.20.0.5", "10.30.0.9", "tcp", 1883)
    v = rs.evaluate(Packet(flow.src, flow.dst, "tcp", 1883, iifname="eth0.20"),
                    local=set(p.firewall.addresses))
    assert (v.action, v.comment, v.logged) == ("drop", "default deny", ("iotsec drop: ",))
    assert rs.counters("forward")[-1] == ("default deny", 1)


@pytest.mark.parametrize("line", [
    "ip saddr 10.0.0.0/8 jump somewhere",
    "tcp sport 22 accept",
    "meta mark 1 accept",
    "ip saddr @nope accept",
    "ip saddr fd00::/8 accept",
    "ct mark 1 accept",
])
def test_interpreter_refuses_what_it_does_not_know(line: str) -> None:
    text = ("table inet t {\n\tchain forward {\n\t\ttype filter hook forward priority "
            f"filter; policy drop;\n\t\t{line}\n\t}}\n}}\n")
    with pytest.raises(RulesetSyntaxError) as info:
        Ruleset(text)
    assert "ruleset line 4" in str(info.value)


def test_interpreter_refuses_unclosed_blocks() -> None:
    with pytest.raises(RulesetSyntaxError):
        Ruleset("table inet t {\n\tchain forward {\n")


def test_nft_accepts_the_site_ruleset(site_text: str) -> None:
    nft = require_root_tools("nft")["nft"]
    result = nft_check_text(nft, site_text)
    assert result.returncode == 0, result.stderr
    service.nft_check(site_text)  # the service layer's own run of 'nft -c -f -'


def test_nft_refusal_is_reported(site_text: str) -> None:
    require_root_tools("nft")
    with pytest.raises(NftError) as info:
        service.nft_check(site_text.replace("policy drop;", "policy maybe;", 1))
    assert "nft refused the ruleset" in str(info.value)


def test_missing_nft_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.shutil, "which", lambda name: None)
    monkeypatch.setattr(service.os, "access", lambda path, mode: False)
    with pytest.raises(NftError) as info:
        service.nft_check("table inet x {}\n")
    assert "not installed" in str(info.value)


def test_large_policy_compiles_and_nft_accepts_it() -> None:
    zones = [{"name": f"z{i}", "vlan": i + 1, "interface": f"vl{i}",
              "subnets": [f"10.{i // 256}.{i % 256}.0/24", f"fd00:{i:x}::/64"]}
             for i in range(200)]
    rules = [{"name": f"r{j}", "action": ["allow", "deny", "reject"][j % 3],
              "from": f"z{j % 200}", "to": [f"z{(j * 7) % 200}", f"z{(j * 11) % 200}"],
              "services": ["mqtts", "coaps", "ssh"][: j % 3 + 1]} for j in range(1000)]
    text = compile_nftables(policy(zones, rules))
    nft = require_root_tools("nft")["nft"]
    result = nft_check_text(nft, text)
    assert result.returncode == 0, result.stderr[:2000]


def test_missing_root_skips_off_ci_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import services
    from tests.netseg import support

    monkeypatch.setattr(support.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(support, "tool", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(services, "UNDER_CI", False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        support.require_root_tools("nft")
    monkeypatch.setattr(services, "UNDER_CI", True)
    with pytest.raises(pytest.fail.Exception, match="required under CI: needs root"):
        support.require_root_tools("nft")
    monkeypatch.setattr(support, "tool", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="'ip' tool is not installed"):
        support.require_root_tools("ip")


_WORDS = ["ip saddr", "ip6 daddr", "ip6 hoplimit", "tcp dport", "udp dport", "meta l4proto",
          "meta nfproto", "ct state", "limit rate 10/second burst", "log prefix",
          "reject with icmpx type", "icmpv6 type", "iifname", "iif",
          "ip", "ip6", "saddr", "daddr", "!=", "@z_a_v4", "{ 10.0.0.0/8, 10.1.0.0/16 }",
          "10.0.0.0/8", "fd00::/8", "tcp", "udp", "dport", "22", "1-10", "{ 22, 80-90 }",
          "meta", "l4proto", "nfproto", "ipv4", "icmp", "ct", "state", "new,established",
          "iifname", '"eth0"', "counter", "limit", "rate", "10/second", "burst", "packets",
          "log", "prefix", '"x: "', "comment", '"c"', "accept", "drop", "reject", "with",
          "icmpx", "type", "admin-prohibited", "hoplimit", "255", "icmpv6", "x", "{", "}"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=12), st.text(max_size=40))
def test_interpreter_refuses_cleanly(words: list[str], noise: str) -> None:
    """Whatever the rule text, the interpreter parses it or raises RulesetSyntaxError."""
    for line in (" ".join(words), noise.replace("\n", " ")):
        text = ("table inet t {\n\tset z_a_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
                "\t\telements = { 10.0.0.0/24 }\n\t}\n\tchain forward {\n\t\ttype filter "
                f"hook forward priority filter; policy drop;\n\t\t{line}\n\t}}\n}}\n")
        message = "ruleset"
        try:
            Ruleset(text)
        except RulesetSyntaxError as exc:
            message = str(exc)
        assert "ruleset" in message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=6),
       st.one_of(st.none(), st.integers(-10, 70000)))
def test_flow_parsing_refuses_cleanly(src: str, dst: str, proto: str,
                                      port: int | None) -> None:
    from iotsec.errors import InvalidInputError

    try:
        flow = Flow.parse(src, dst, proto, port)
    except InvalidInputError as exc:
        message = str(exc)
    else:
        assert flow.src.version == flow.dst.version
        return
    assert message
