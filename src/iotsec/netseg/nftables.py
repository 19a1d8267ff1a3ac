"""Compiling a zone policy to an nftables ruleset (``nft -f`` input, family ``inet``).

The ruleset replaces one table atomically (``table``/``delete table``/``table {...}`` in
one file is one transaction) and holds:

- a named interval set per zone and family (``z_<zone>_v4`` / ``z_<zone>_v6``), so an
  operator can add a subnet at run time with ``nft add element``;
- a ``forward`` chain (traffic between zones) and an ``input`` chain (traffic to the
  firewall itself, rules with ``to: self``), both with ``policy drop``;
- first in each chain ``ct state established,related accept`` and ``ct state invalid
  drop``, so only the first packet of a flow meets the policy rules; the input chain also
  accepts loopback and IPv6 neighbour discovery (without which IPv6 stops working);
- anti-spoofing: with ``anti_spoofing`` on, a packet that arrives on a zone's interface
  with a source outside the subnets of that interface's zones is dropped (an interface
  shared by several zones gets a named set ``i_<n>_v4``/``_v6`` of their union; the input
  chain also lets through 0.0.0.0 and fe80::/10, used by DHCP and neighbour discovery);
- one line per rule, address family and protocol, in policy order, each with a counter
  and ``comment "rule <name>"``; port lists as anonymous sets; ``reject`` answers with
  ICMP administratively prohibited;
- the default deny: optionally a rate-limited ``log prefix`` line, then a counted drop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from iotsec.netseg.model import (
    Action,
    Endpoint,
    EndpointKind,
    Network,
    Policy,
    PortMatch,
    Rule,
    Zone,
)

__all__ = ["DEFAULT_COMMENT", "LOG_LIMIT", "SPOOF_COMMENT", "compile_nftables", "set_name"]

LOG_LIMIT = "limit rate 10/second burst 20 packets"
DEFAULT_COMMENT = "default deny"
SPOOF_COMMENT = "anti-spoofing"
_ND = ("nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert")
_VERDICT = {Action.ALLOW: "accept", Action.DENY: "drop",
            Action.REJECT: "reject with icmpx type admin-prohibited"}


def set_name(zone: str, family: int) -> str:
    return f"z_{zone}_v{family}"


def _ip(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _elements(nets: Iterable[Network | str]) -> str:
    items = [str(n) for n in nets]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _addr(direction: str, endpoint: Endpoint, family: int) -> str | None:
    if endpoint.kind is not EndpointKind.NETS:
        return None
    zone = endpoint.single_zone
    value = f"@{set_name(zone, family)}" if zone else _elements(endpoint.nets(family))
    return f"{_ip(family)} {direction} {value}"


def _ports(ports: tuple[tuple[int, int], ...]) -> str:
    items = [str(a) if a == b else f"{a}-{b}" for a, b in ports]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _l4(m: PortMatch, family: int | None) -> str | None:
    """The transport match; ``family`` None means a line shared by IPv4 and IPv6."""
    if m.proto == "any":
        return None
    if m.proto == "icmp":
        if family is None:
            return "meta l4proto { icmp, ipv6-icmp }"
        return "meta l4proto icmp" if family == 4 else "meta l4proto ipv6-icmp"
    if m.ports is None:
        return f"meta l4proto {m.proto}"
    return f"{m.proto} dport {_ports(m.ports)}"


def _rule_lines(rule: Rule, log_prefix: str) -> list[str]:
    lines: list[str] = []
    input_chain = rule.chain == "input"
    dst = Endpoint(EndpointKind.ANY) if input_chain else rule.dst
    shared = rule.src.kind is EndpointKind.ANY and dst.kind is EndpointKind.ANY
    families: tuple[int | None, ...] = (None,) if shared and len(rule.families) == 2 \
        else rule.families
    verdict = _VERDICT[rule.action]
    comment = f'comment "rule {rule.name}"'
    for family in families:
        for m in rule.matches:
            parts: list[str] = []
            if family is not None:
                s = _addr("saddr", rule.src, family)
                d = _addr("daddr", dst, family)
                parts += [p for p in (s, d) if p]
                if not parts and (m.proto != "icmp"):
                    parts.append(f"meta nfproto ipv{family}")
            l4 = _l4(m, family)
            if l4:
                parts.append(l4)
            match = " ".join(parts)
            if rule.log:
                prefix = f"{log_prefix}{rule.name}: "[:127]
                lines.append(f'{match} {LOG_LIMIT} log prefix "{prefix}"'.strip())
            lines.append(f"{match} counter {verdict} {comment}".strip())
    return lines


def _interfaces(policy: Policy) -> list[tuple[str, list[Zone]]]:
    by_iface: dict[str, list[Zone]] = {}
    for zone in policy.zones:
        if zone.interface:
            by_iface.setdefault(zone.interface, []).append(zone)
    return sorted(by_iface.items())


def _iface_set(index: int, family: int) -> str:
    return f"i_{index}_v{family}"


def _set_block(name: str, family: int, comment: str, nets: Iterable[Network]) -> list[str]:
    return [f"\tset {name} {{",
            f"\t\ttype {'ipv4_addr' if family == 4 else 'ipv6_addr'}",
            "\t\tflags interval",
            f'\t\tcomment "{comment}"',
            f"\t\telements = {{ {', '.join(str(n) for n in nets)} }}",
            "\t}"]


def _iface_nets(zones: list[Zone], family: int) -> list[Network]:
    if family == 4:
        return list(ipaddress.collapse_addresses(n for z in zones for n in z.v4))
    return list(ipaddress.collapse_addresses(n for z in zones for n in z.v6))


def _spoof_sets(policy: Policy) -> list[str]:
    """A named set per interface shared by several zones (one zone uses its own set)."""
    out: list[str] = []
    for k, (iface, zones) in enumerate(_interfaces(policy)):
        if len(zones) > 1:
            for family in (4, 6):
                nets = _iface_nets(zones, family)
                if nets:
                    out += _set_block(_iface_set(k, family), family, f"interface {iface}",
                                      nets)
    return out


def _spoof_lines(policy: Policy, *, input_chain: bool) -> list[str]:
    # Named sets and plain values only: every anonymous set costs nft a set object to
    # create when the ruleset is loaded, which dominates load time on large sites.
    lines: list[str] = []
    for k, (iface, zones) in enumerate(_interfaces(policy)):
        for family in (4, 6):
            if not _iface_nets(zones, family):
                match = f"meta nfproto ipv{family}"
            else:
                name = set_name(zones[0].name, family) if len(zones) == 1 \
                    else _iface_set(k, family)
                match = f"{_ip(family)} saddr != @{name}"
                if input_chain:
                    # Hosts without an address yet (DHCP) and IPv6 link-local senders talk
                    # to the firewall itself legitimately; they are never forwarded.
                    match += " ip saddr != 0.0.0.0" if family == 4 else \
                        " ip6 saddr != fe80::/10"
            lines.append(f'iifname "{iface}" {match} counter drop comment "{SPOOF_COMMENT}"')
    return lines


def _chain(name: str, body: list[str]) -> list[str]:
    head = [f"\tchain {name} {{",
            f"\t\ttype filter hook {name} priority filter; policy drop;"]
    return head + [f"\t\t{line}" for line in body] + ["\t}"]


def compile_nftables(policy: Policy) -> str:
    """The nftables ruleset for ``policy`` (text for ``nft -f``)."""
    fw = policy.firewall
    table = fw.table
    out = [
        "#!/usr/sbin/nft -f",
        "# Generated by 'iotsec netseg compile'; edit the policy file, not this output.",
        f"# policy sha256 {policy.digest or '-'}: {len(policy.zones)} zones, "
        f"{len(policy.rules)} rules",
        f"table inet {table}",
        f"delete table inet {table}",
        "",
        f"table inet {table} {{",
    ]
    for zone in policy.zones:
        for family, nets in ((4, zone.v4), (6, zone.v6)):
            if nets:
                out += _set_block(set_name(zone.name, family), family, f"zone {zone.name}",
                                  nets)
    if fw.anti_spoofing:
        out += _spoof_sets(policy)
    stateful = ["ct state established,related counter accept",
                "ct state invalid counter drop"]
    tail = []
    if fw.log_drops:
        tail.append(f'{LOG_LIMIT} log prefix "{fw.log_prefix}"')
    tail.append(f'counter drop comment "{DEFAULT_COMMENT}"')
    log_prefix = f"{table} "
    forward = list(stateful)
    inp = ['iif "lo" accept', *stateful,
           f"icmpv6 type {{ {_ND} }} ip6 hoplimit 255 counter accept"]
    if fw.anti_spoofing:
        forward += _spoof_lines(policy, input_chain=False)
        inp += _spoof_lines(policy, input_chain=True)
    for rule in policy.rules:
        (inp if rule.chain == "input" else forward).extend(_rule_lines(rule, log_prefix))
    out += _chain("forward", forward + tail)
    out += _chain("input", inp + tail)
    out.append("}")
    return "\n".join(out) + "\n"
