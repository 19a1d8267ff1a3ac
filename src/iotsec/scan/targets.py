"""What to scan: targets (addresses, CIDR ranges, host names), port lists and the scope.

Everything here is pure: names are resolved by the caller (``iotsec.netprobe.net``) and handed
in. The plan is checked before a single packet is sent:

- a target outside the scope file is refused (the whole scan, not just that target);
- a plan of 2**24 addresses (an IPv4 /8) or more needs ``confirm_large``, and no plan may
  exceed :data:`MAX_HOSTS` addresses even then;
- ranges are never expanded into lists: they are kept as merged intervals and walked
  lazily, so a confirmed /8 costs no more memory than a /24.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from iotsec.errors import InputTooLargeError, ScanResolveError, ScanScopeError, ScanTargetError

__all__ = [
    "DEFAULT_PORTS", "LARGE_HOSTS", "MAX_HOSTS", "HostTarget", "PortSpec", "ScanPlan", "Scope",
    "TargetSpec", "parse_target", "parse_targets", "plan"
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: A plan of this many addresses (an IPv4 /8) or more needs explicit confirmation.
LARGE_HOSTS = 2**24
#: No plan may hold more addresses than this, confirmed or not (two IPv4 /8s).
MAX_HOSTS = 2**25
MAX_TARGETS = 100_000
MAX_TARGET_TEXT = 255
MAX_PORT_SPEC = 4096
MAX_SCOPE_BYTES = 1024 * 1024
MAX_SCOPE_ENTRIES = 100_000
#: At most this many addresses of one host name are scanned.
MAX_ADDRESSES_PER_NAME = 16

#: The default ports: IoT, management and industrial services (TCP), CoAP and CoAP over
#: DTLS (UDP).
DEFAULT_PORTS = ("T:21,22,23,80,81,82,443,502,554,1883,2323,4443,5000,5001,5683,5684,7547,"
                 "8000,8001,8008,8080,8081,8082,8086,8088,8181,8443,8554,8880,8883,8888,9000,"
                 "9001,9443,10443,1880,2222,49152,U:5683,5684")

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _fail(text: str, why: str) -> ScanTargetError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ScanTargetError(f"{shown!r} {why}")


# --------------------------------------------------------------------------- ports


def _compress(ports: Sequence[int]) -> str:
    parts: list[str] = []
    i = 0
    while i < len(ports):
        j = i
        while j + 1 < len(ports) and ports[j + 1] == ports[j] + 1:
            j += 1
        parts.append(str(ports[i]) if i == j else f"{ports[i]}-{ports[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass(frozen=True, slots=True)
class PortSpec:
    """TCP and UDP ports to probe, each sorted and without duplicates.

    Syntax (nmap's): ``22,80,8000-8100``; ``T:`` and ``U:`` switch between TCP and UDP for
    the items that follow (``T:1-1024,U:5683``); ``all`` or ``-`` is 1-65535 TCP.
    """

    tcp: tuple[int, ...]
    udp: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        if len(text) > MAX_PORT_SPEC:
            raise ScanTargetError(f"the port list is longer than {MAX_PORT_SPEC} characters")
        tcp: set[int] = set()
        udp: set[int] = set()
        current = tcp
        items = [t.strip() for t in text.split(",")]
        if not any(items):
            raise _fail(text, "is not a port list")
        for item in items:
            if item[:2].upper() in ("T:", "U:"):
                current = tcp if item[0].upper() == "T" else udp
                item = item[2:].strip()
            if item.lower() in ("all", "-"):
                current.update(range(1, 65536))
                continue
            lo_text, sep, hi_text = item.partition("-")
            if not lo_text.isdigit() or (sep and not hi_text.isdigit()) \
                    or len(lo_text) > 6 or len(hi_text) > 6:
                raise _fail(item, "is not a port or a range of ports (such as 8000-8100)")
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
            for port in (lo, hi):
                if not 1 <= port <= 65535:
                    raise _fail(item, "is outside 1-65535")
            if hi < lo:
                raise _fail(item, "is a range that ends before it starts")
            current.update(range(lo, hi + 1))
        if not tcp and not udp:
            raise _fail(text, "names no port")
        return cls(tcp=tuple(sorted(tcp)), udp=tuple(sorted(udp)))

    @property
    def count(self) -> int:
        return len(self.tcp) + len(self.udp)

    def __str__(self) -> str:
        parts = []
        if self.tcp:
            parts.append("T:" + _compress(self.tcp))
        if self.udp:
            parts.append("U:" + _compress(self.udp))
        return ",".join(parts)


# --------------------------------------------------------------------------- targets


def _host_name(text: str) -> str | None:
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return name.lower()
    return None


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One target as given: exactly one of ``network`` (an address is a /32 or /128) and
    ``name`` is set. ``device`` is the registered device it came from (``--fleet``)."""

    text: str
    network: IPNetwork | None = None
    name: str | None = None
    device: str | None = None

    @property
    def size(self) -> int:
        """Addresses this target expands to (a name counts as one until resolved)."""
        return _host_count(self.network) if self.network is not None else 1


def _host_count(net: IPNetwork) -> int:
    n = net.num_addresses
    if net.version == 4 and net.prefixlen <= 30:
        return n - 2
    if net.version == 6 and net.prefixlen <= 126:
        return n - 1
    return n


def parse_target(text: str, *, device: str | None = None) -> TargetSpec:
    """An address, a CIDR range or a host name; anything else is a :class:`ScanTargetError`."""
    raw = text.strip()
    if not raw:
        raise ScanTargetError("an empty target was given")
    if len(raw) > MAX_TARGET_TEXT:
        raise _fail(raw, f"is longer than {MAX_TARGET_TEXT} characters")
    if "/" in raw:
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise _fail(raw, "is not a valid CIDR range") from None
        return TargetSpec(text=raw, network=net, device=device)
    try:
        addr = ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        pass
    else:
        if addr.is_unspecified or addr.is_multicast:
            raise _fail(raw, "is not a unicast address")
        return TargetSpec(text=raw, network=ipaddress.ip_network(addr), device=device)
    if re.fullmatch(r"[0-9.]+", raw):
        raise _fail(raw, "is not a valid IP address")
    if re.fullmatch(r"[0-9.-]+", raw):
        raise _fail(raw, "looks like an address range; give ranges in CIDR form "
                         "(192.0.2.0/24)")
    name = _host_name(raw)
    if name is None:
        raise _fail(raw, "is neither an IP address, a CIDR range nor a valid host name")
    return TargetSpec(text=raw, name=name, device=device)


def parse_targets(texts: Iterable[str]) -> list[TargetSpec]:
    out: list[TargetSpec] = []
    for text in texts:
        out.append(parse_target(text))
        if len(out) > MAX_TARGETS:
            raise ScanTargetError(f"more than {MAX_TARGETS} targets were given")
    return out


# --------------------------------------------------------------------------- scope


def _span(net: IPNetwork) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


@dataclass(frozen=True)
class _Intervals:
    """Sorted, merged, inclusive integer intervals: fast containment tests."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @classmethod
    def of(cls, spans: Iterable[tuple[int, int]]) -> _Intervals:
        merged: list[list[int]] = []
        for lo, hi in sorted(spans):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(tuple(m[0] for m in merged), tuple(m[1] for m in merged))

    def covers(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.starts, lo) - 1
        return i >= 0 and self.ends[i] >= hi

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self.starts, self.ends, strict=True))


@dataclass(frozen=True)
class Scope:
    """The targets an operator is authorised to scan: one address, CIDR range or host name
    per line, ``#`` comments. A target is in scope when all of its addresses lie inside the
    listed ranges (adjacent ranges count as one), or when it is a listed host name."""

    v4: _Intervals
    v6: _Intervals
    names: frozenset[str]
    entries: int

    @classmethod
    def parse(cls, data: bytes) -> Scope:
        if len(data) > MAX_SCOPE_BYTES:
            raise InputTooLargeError(f"the scope file is larger than {MAX_SCOPE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScanTargetError("the scope file is not UTF-8 text") from None
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        names: set[str] = set()
        count = 0
        for number, line in enumerate(text.splitlines(), start=1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            count += 1
            if count > MAX_SCOPE_ENTRIES:
                raise ScanTargetError(f"the scope file has more than {MAX_SCOPE_ENTRIES} "
                                      "entries")
            try:
                spec = parse_target(entry)
            except ScanTargetError as exc:
                raise ScanTargetError(f"scope file line {number}: {exc}",
                                      hint=exc.hint) from None
            if spec.network is not None:
                (v4 if spec.network.version == 4 else v6).append(_span(spec.network))
            elif spec.name is not None:
                names.add(spec.name)
        if count == 0:
            raise ScanTargetError("the scope file lists nothing",
                                  hint="list one address, CIDR range or host name per line")
        return cls(_Intervals.of(v4), _Intervals.of(v6), frozenset(names), count)

    def covers_network(self, net: IPNetwork) -> bool:
        lo, hi = _span(net)
        return (self.v4 if net.version == 4 else self.v6).covers(lo, hi)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class HostTarget:
    """One address to scan, with the name it was reached by and the device it belongs to."""

    address: str
    name: str | None = None
    device: str | None = None

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


@dataclass(frozen=True)
class ScanPlan:
    """The checked plan: address intervals walked lazily, plus what is known about single
    addresses (the host name used to reach them, the device they belong to)."""

    v4: _Intervals
    v6: _Intervals
    host_count: int
    ports: PortSpec
    labels: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    targets: tuple[str, ...] = ()

    def hosts(self) -> Iterator[HostTarget]:
        for version, intervals in ((4, self.v4), (6, self.v6)):
            for lo, hi in intervals:
                for value in range(lo, hi + 1):
                    address = str(ipaddress.ip_address(value) if version == 6
                                  else ipaddress.IPv4Address(value))
                    name, device = self.labels.get(address, (None, None))
                    yield HostTarget(address, name, device)


def _usable_span(net: IPNetwork) -> tuple[int, int]:
    lo, hi = _span(net)
    if net.version == 4 and net.prefixlen <= 30:
        return lo + 1, hi - 1
    if net.version == 6 and net.prefixlen <= 126:
        return lo + 1, hi
    return lo, hi


def plan(targets: Sequence[TargetSpec], ports: PortSpec, *,
         resolved: Mapping[str, Sequence[str]] | None = None, scope: Scope | None = None,
         confirm_large: bool = False) -> ScanPlan:
    """Check ``targets`` against ``scope`` and the size limits and build the plan.

    ``resolved`` maps every host name among the targets to its addresses; a name missing
    from it, or mapped to nothing, is a :class:`ScanResolveError`.
    """
    if not targets:
        raise ScanTargetError("no target was given")
    resolved = resolved or {}
    spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    labels: dict[str, tuple[str | None, str | None]] = {}
    total = 0
    # Whole ranges, network and broadcast addresses included: what "a /8" means.
    whole: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for spec in targets:
        if spec.network is not None:
            net = spec.network
            if scope is not None and not scope.covers_network(net):
                raise ScanScopeError(f"target {spec.text} is outside the scope file")
            total += _host_count(net)
            whole[net.version].append(_span(net))
            if total > MAX_HOSTS:
                raise ScanScopeError(f"the targets add up to more than {MAX_HOSTS} addresses, "
                                     "more than one scan may cover",
                                     hint="split the range into several scans")
            spans[net.version].append(_usable_span(net))
            if net.num_addresses == 1:
                labels[str(net.network_address)] = (None, spec.device)
            continue
        assert spec.name is not None
        addresses = list(dict.fromkeys(resolved.get(spec.name, ())))[:MAX_ADDRESSES_PER_NAME]
        if not addresses:
            raise ScanResolveError(f"host name {spec.name} does not resolve")
        for address in addresses:
            net = ipaddress.ip_network(address)
            if scope is not None and spec.name not in scope.names \
                    and not scope.covers_network(net):
                raise ScanScopeError(f"target {spec.text} resolves to {address}, which is "
                                     "outside the scope file")
            total += 1
            spans[net.version].append(_span(net))
            labels[str(net.network_address)] = (spec.name, spec.device)
    v4, v6 = _Intervals.of(spans[4]), _Intervals.of(spans[6])
    count = sum(hi - lo + 1 for lo, hi in v4) + sum(hi - lo + 1 for lo, hi in v6)
    raw = sum(hi - lo + 1 for version in (4, 6) for lo, hi in _Intervals.of(whole[version]))
    if max(count, raw) >= LARGE_HOSTS and not confirm_large:
        raise ScanScopeError(f"the targets cover {max(count, raw)} addresses (an IPv4 /8 or "
                             "more)",
                             hint="pass --confirm-large if you really mean to scan that much")
    return ScanPlan(v4=v4, v6=v6, host_count=count, ports=ports, labels=labels,
                    targets=tuple(t.text for t in targets))
