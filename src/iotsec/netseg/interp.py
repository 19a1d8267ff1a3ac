"""A small interpreter for the nftables subset that ``iotsec.netseg.nftables`` emits.

It reads the ruleset *text* (not the compiler's data), so the equivalence test between
``check`` and the compiled ruleset really exercises what ``nft -f`` would load. Anything
outside the subset raises ``RulesetSyntaxError`` rather than being guessed at. Semantics
follow nftables for the ``inet`` family: a payload match (``ip saddr``, ``tcp dport``,
``icmpv6 type``...) first requires its protocol, even when negated with ``!=``; the first
rule with a verdict that matches decides; ``log``/``limit``/``counter`` never decide; at
the end of a base chain its policy applies. ``limit`` is taken as not exceeded.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from iotsec.errors import NetsegError
from iotsec.netseg.model import Address, Network

__all__ = ["Match", "Packet", "Ruleset", "RulesetSyntaxError", "Verdict"]


class RulesetSyntaxError(NetsegError):
    """Ruleset text outside the subset the interpreter understands."""

    code = "nft-subset"


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a flow as the firewall sees it."""

    src: Address
    dst: Address
    l4proto: Literal["tcp", "udp", "icmp", "ipv6-icmp"]
    dport: int | None = None
    iifname: str = ""
    ct_state: str = "new"
    icmp_type: str | None = None
    hoplimit: int = 64

    @property
    def family(self) -> int:
        return self.src.version


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["accept", "drop", "reject"]
    chain: str
    comment: str | None  # the deciding rule's comment; None when the chain policy decided
    line: int | None  # line of the deciding rule in the ruleset text
    logged: tuple[str, ...] = ()  # log prefixes of the log statements passed on the way


Match = Callable[[Packet], bool]


@dataclass
class _Rule:
    matches: list[Match]
    verdict: Literal["accept", "drop", "reject"] | None
    comment: str | None
    line: int
    log: str | None = None
    packets: int = 0


@dataclass
class _Chain:
    name: str
    hook: str
    policy: Literal["accept", "drop"]
    rules: list[_Rule] = field(default_factory=list)


_TOKEN = re.compile(r'"([^"]*)"|(\{[^}]*\})|(\S+)')


class _Tokens:
    def __init__(self, text: str, line: int) -> None:
        self.items: list[tuple[str, str]] = []  # (kind, value): word | str | set
        for m in _TOKEN.finditer(text):
            if m.group(1) is not None:
                self.items.append(("str", m.group(1)))
            elif m.group(2) is not None:
                self.items.append(("set", m.group(2)[1:-1]))
            else:
                self.items.append(("word", m.group(3)))
        self.pos = 0
        self.line = line

    def error(self, what: str) -> RulesetSyntaxError:
        return RulesetSyntaxError(f"ruleset line {self.line}: {what}",
                                  hint="the interpreter covers the subset iotsec emits")

    def more(self) -> bool:
        return self.pos < len(self.items)

    def peek(self) -> str | None:
        return self.items[self.pos][1] if self.more() else None

    def take(self, kind: str | None = None) -> str:
        if not self.more():
            raise self.error("unexpected end of line")
        k, v = self.items[self.pos]
        if kind is not None and k != kind:
            raise self.error(f"expected a {kind}, found {v!r}")
        self.pos += 1
        return v

    def take_item(self) -> tuple[str, str]:
        """The next token with its kind (word, str or set)."""
        if not self.more():
            raise self.error("unexpected end of line")
        item = self.items[self.pos]
        self.pos += 1
        return item

    def take_int(self) -> int:
        word = self.take("word")
        if not word.isdigit():
            raise self.error(f"expected a number, found {word!r}")
        return int(word)

    def negated(self) -> bool:
        if self.peek() == "!=":
            self.pos += 1
            return True
        return False


def _split(body: str) -> list[str]:
    return [x.strip() for x in body.split(",") if x.strip()]


class Ruleset:
    """A parsed ruleset: ``evaluate`` a packet, read ``counters``."""

    def __init__(self, text: str) -> None:
        self.sets: dict[str, list[Network]] = {}
        self.chains: dict[str, _Chain] = {}
        self.table: str | None = None
        self._parse(text)

    # --- parsing ------------------------------------------------------------------------

    def _parse(self, text: str) -> None:
        lines = text.splitlines()
        i = 0
        depth: list[str] = []
        current_set: str | None = None
        current_chain: _Chain | None = None
        while i < len(lines):
            raw = lines[i].strip()
            i += 1
            if not raw or raw.startswith("#"):
                continue
            t = _Tokens(raw, i)
            if not depth:
                if re.fullmatch(r"(delete )?table inet \w+", raw):
                    continue
                m = re.fullmatch(r"table inet (\w+) \{", raw)
                if not m:
                    raise t.error(f"unsupported statement {raw!r}")
                self.table = m.group(1)
                depth.append("table")
            elif depth[-1] == "table":
                if raw == "}":
                    depth.pop()
                    continue
                m = re.fullmatch(r"(set|chain) ([\w\-]+) \{", raw)
                if not m:
                    raise t.error(f"unsupported table statement {raw!r}")
                depth.append(m.group(1))
                if m.group(1) == "set":
                    current_set = m.group(2)
                    self.sets[current_set] = []
                else:
                    current_chain = _Chain(m.group(2), "", "accept")
                    self.chains[m.group(2)] = current_chain
            elif depth[-1] == "set":
                assert current_set is not None
                if raw == "}":
                    depth.pop()
                elif raw.startswith("elements = {") and raw.endswith("}"):
                    body = raw[len("elements = {"):-1]
                    self.sets[current_set] = [self._net(x, t) for x in _split(body)]
                elif not re.fullmatch(r'type (ipv4_addr|ipv6_addr)|flags interval|'
                                      r'comment "[^"]*"', raw):
                    raise t.error(f"unsupported set statement {raw!r}")
            else:
                assert current_chain is not None
                if raw == "}":
                    depth.pop()
                    continue
                m = re.fullmatch(r"type filter hook (\w+) priority filter; policy "
                                 r"(accept|drop);", raw)
                if m:
                    current_chain.hook = m.group(1)
                    current_chain.policy = "accept" if m.group(2) == "accept" else "drop"
                    continue
                current_chain.rules.append(self._rule(t))
        if depth:
            raise RulesetSyntaxError("ruleset ends inside a block")

    @staticmethod
    def _net(text: str, t: _Tokens) -> Network:
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise t.error(f"bad address {text!r}") from None

    def _addresses(self, t: _Tokens, family: int) -> list[Network]:
        kind, value = t.take_item()
        if kind == "set":
            nets = [self._net(x, t) for x in _split(value)]
        elif kind == "str":
            raise t.error(f"expected an address, found {value!r}")
        elif value.startswith("@"):
            if value[1:] not in self.sets:
                raise t.error(f"unknown set {value}")
            nets = self.sets[value[1:]]
        else:
            nets = [self._net(value, t)]
        if any(n.version != family for n in nets):
            raise t.error("address of the wrong family")
        return nets

    @staticmethod
    def _ports(t: _Tokens) -> list[tuple[int, int]]:
        kind, value = t.take_item()
        out = []
        for item in _split(value) if kind == "set" else [value]:
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
            if not m:
                raise t.error(f"bad port {item!r}")
            out.append((int(m.group(1)), int(m.group(2) or m.group(1))))
        return out

    def _rule(self, t: _Tokens) -> _Rule:
        rule = _Rule([], None, None, t.line)
        while t.more():
            word = t.take()
            if word == "ct":
                if t.take() != "state":
                    raise t.error("only 'ct state' is supported")
                states = set(t.take().split(","))
                rule.matches.append(lambda p, s=states: p.ct_state in s)  # type: ignore[misc]
            elif word in ("iif", "iifname"):
                neg = t.negated()
                name = t.take("str")
                rule.matches.append(lambda p, n=name, neg=neg: (p.iifname == n) != neg)  # type: ignore[misc]
            elif word == "meta":
                key = t.take()
                if key == "nfproto":
                    fam = {"ipv4": 4, "ipv6": 6}.get(t.take())
                    if fam is None:
                        raise t.error("bad nfproto")
                    rule.matches.append(lambda p, f=fam: p.family == f)  # type: ignore[misc]
                elif key == "l4proto":
                    kind, value = t.take_item()
                    protos = set(_split(value)) if kind == "set" else {value}
                    if not protos <= {"tcp", "udp", "icmp", "ipv6-icmp"}:
                        raise t.error(f"unsupported l4proto {value!r}")
                    rule.matches.append(lambda p, s=protos: p.l4proto in s)  # type: ignore[misc]
                else:
                    raise t.error(f"unsupported meta {key!r}")
            elif word in ("ip", "ip6"):
                fam = 4 if word == "ip" else 6
                field_ = t.take()
                if field_ == "hoplimit" and fam == 6:
                    hop = t.take_int()
                    rule.matches.append(lambda p, h=hop: p.family == 6 and p.hoplimit == h)  # type: ignore[misc]
                    continue
                if field_ not in ("saddr", "daddr"):
                    raise t.error(f"unsupported {word} {field_}")
                neg = t.negated()
                nets = self._addresses(t, fam)

                def addr_match(p: Packet, f: int = fam, src: bool = field_ == "saddr",
                               nets: list[Network] = nets, neg: bool = neg) -> bool:
                    if p.family != f:
                        return False
                    a = p.src if src else p.dst
                    return any(a in n for n in nets) != neg

                rule.matches.append(addr_match)
            elif word in ("tcp", "udp"):
                if t.take() != "dport":
                    raise t.error(f"only '{word} dport' is supported")
                neg = t.negated()
                ranges = self._ports(t)

                def port_match(p: Packet, proto: str = word, ranges: list[tuple[int, int]]
                               = ranges, neg: bool = neg) -> bool:
                    if p.l4proto != proto or p.dport is None:
                        return False
                    return any(lo <= p.dport <= hi for lo, hi in ranges) != neg

                rule.matches.append(port_match)
            elif word == "icmpv6":
                if t.take() != "type":
                    raise t.error("only 'icmpv6 type' is supported")
                kind, value = t.take_item()
                types = set(_split(value)) if kind == "set" else {value}
                rule.matches.append(lambda p, s=types: p.l4proto == "ipv6-icmp"  # type: ignore[misc]
                                    and p.icmp_type in s)
            elif word == "counter":
                continue
            elif word == "limit":
                if t.take() != "rate" or not re.fullmatch(r"\d+/second", t.take()):
                    raise t.error("bad limit")
                if t.peek() == "burst":
                    t.take()
                    t.take_int()
                    if t.take() != "packets":
                        raise t.error("bad limit burst")
            elif word == "log":
                rule.log = ""
                while t.peek() in ("prefix", "level"):
                    if t.take() == "prefix":
                        rule.log = t.take("str")
                    else:
                        t.take()
            elif word == "comment":
                rule.comment = t.take("str")
            elif word in ("accept", "drop"):
                rule.verdict = "accept" if word == "accept" else "drop"
            elif word == "reject":
                rule.verdict = "reject"
                if t.peek() == "with":
                    t.take()
                    if t.take() != "icmpx" or t.take() != "type":
                        raise t.error("only 'reject with icmpx type ...' is supported")
                    t.take()
            else:
                raise t.error(f"unsupported expression {word!r}")
        return rule

    # --- evaluation ---------------------------------------------------------------------

    def evaluate(self, packet: Packet, *, local: frozenset[Address] | set[Address] =
                 frozenset()) -> Verdict:
        """Run ``packet`` through the input chain when its destination is one of the
        firewall's ``local`` addresses, else through the forward chain."""
        name = "input" if packet.dst in local else "forward"
        chain = self.chains.get(name)
        if chain is None:
            return Verdict("accept", name, None, None)
        logged: list[str] = []
        for rule in chain.rules:
            if all(m(packet) for m in rule.matches):
                rule.packets += 1
                if rule.log is not None:
                    logged.append(rule.log)
                if rule.verdict is not None:
                    return Verdict(rule.verdict, name, rule.comment, rule.line, tuple(logged))
        return Verdict(chain.policy, name, None, None, tuple(logged))

    def counters(self, chain: str) -> list[tuple[str | None, int]]:
        """(comment, packets) of every rule of ``chain``, in order."""
        return [(r.comment, r.packets) for r in self.chains[chain].rules]
