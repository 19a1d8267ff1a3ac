"""Targets, port lists, scope files and the plan: the refusals come before any packet."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotsec.errors import (
    InputTooLargeError,
    ScanResolveError,
    ScanScopeError,
    ScanTargetError,
)
from iotsec.scan.targets import (
    DEFAULT_PORTS,
    LARGE_HOSTS,
    MAX_HOSTS,
    PortSpec,
    Scope,
    parse_target,
    parse_targets,
    plan,
)

PORTS = PortSpec.parse("22")


# --------------------------------------------------------------------------- ports


def test_port_lists() -> None:
    spec = PortSpec.parse("22,80, 8000-8002,T:443,U:5683,5684")
    assert spec.tcp == (22, 80, 443, 8000, 8001, 8002)
    assert spec.udp == (5683, 5684)
    assert str(spec) == "T:22,80,443,8000-8002,U:5683-5684"
    assert PortSpec.parse("all").tcp == tuple(range(1, 65536))
    assert PortSpec.parse("-").count == 65535
    assert PortSpec.parse("1,1,1").tcp == (1,)
    default = PortSpec.parse(DEFAULT_PORTS)
    assert 1883 in default.tcp and 8883 in default.tcp and default.udp == (5683, 5684)


@pytest.mark.parametrize("text", ["0", "65536", "70000", "1-65536", "0-10", "-5", "80-22",
                                  "abc", "", ",", "U:", "22,,x", "1" * 8, "T:0"])
def test_ports_outside_1_65535_or_malformed_are_refused(text: str) -> None:
    with pytest.raises(ScanTargetError):
        PortSpec.parse(text)


def test_port_list_size_limit() -> None:
    with pytest.raises(ScanTargetError, match="longer than"):
        PortSpec.parse("22," * 2000)


@given(st.text(alphabet=string.digits + ",-TUtu: ", max_size=40))
def test_port_parser_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        spec = PortSpec.parse(text)
    except ScanTargetError:
        return
    assert all(1 <= p <= 65535 for p in spec.tcp + spec.udp)
    assert list(spec.tcp) == sorted(set(spec.tcp))
    assert PortSpec.parse(str(spec)) == spec


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=30))
def test_port_spec_round_trips(ports: list[int]) -> None:
    spec = PortSpec.parse(",".join(map(str, ports)))
    assert spec.tcp == tuple(sorted(set(ports)))
    assert PortSpec.parse(str(spec)) == spec


# --------------------------------------------------------------------------- targets


def test_targets() -> None:
    assert parse_target("192.0.2.7").network == ipaddress.ip_network("192.0.2.7/32")
    assert parse_target("192.0.2.7/24").network == ipaddress.ip_network("192.0.2.0/24")
    assert parse_target("2001:db8::1").network == ipaddress.ip_network("2001:db8::1/128")
    assert parse_target("[2001:db8::1]").network is not None
    assert parse_target("Sensor-7.Fleet.Example.").name == "sensor-7.fleet.example"


@pytest.mark.parametrize("text", ["10.0.0.0/33", "300.1.1.1/24", "10.0.0/8x", "1.2.3.4/-1",
                                  "2001:db8::/129", "10.0.0.1/24/3", "/24", "::/abc"])
def test_invalid_cidr(text: str) -> None:
    with pytest.raises(ScanTargetError, match="not a valid CIDR range"):
        parse_target(text)


@pytest.mark.parametrize("text", ["999.1.1.1", "1.2.3", "-bad.example", "a..b", "x" * 64,
                                  "under_score.example", "sp ace", "0.0.0.0", "224.0.0.1",  # noqa: S104
                                  "", "  ", "a" * 300, "10.0.0.1-20"])
def test_invalid_targets(text: str) -> None:
    with pytest.raises(ScanTargetError):
        parse_target(text)


@given(st.text(max_size=60))
def test_target_parser_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        spec = parse_target(text)
    except ScanTargetError:
        return
    assert (spec.network is None) != (spec.name is None)


# --------------------------------------------------------------------------- plan


def test_a_slash_8_needs_confirmation() -> None:
    with pytest.raises(ScanScopeError, match="/8") as refused:
        plan([parse_target("10.0.0.0/8")], PORTS)
    assert "--confirm-large" in refused.value.hint
    with pytest.raises(ScanScopeError):
        plan([parse_target("10.0.0.0/7")], PORTS)
    # Two halves add up to the same: still refused.
    with pytest.raises(ScanScopeError):
        plan(parse_targets(["10.0.0.0/9", "10.128.0.0/9"]), PORTS)
    confirmed = plan([parse_target("10.0.0.0/8")], PORTS, confirm_large=True)
    assert confirmed.host_count == LARGE_HOSTS - 2
    # Just under the line needs nothing.
    assert plan([parse_target("10.0.0.0/9")], PORTS).host_count == 2**23 - 2


def test_expansion_is_bounded_and_lazy() -> None:
    with pytest.raises(ScanScopeError, match="more than"):
        plan([parse_target("2001:db8::/64")], PORTS, confirm_large=True)
    with pytest.raises(ScanScopeError):
        plan(parse_targets(["10.0.0.0/8", "11.0.0.0/8", "12.0.0.0/8"]), PORTS,
             confirm_large=True)
    big = plan([parse_target("10.0.0.0/8")], PORTS, confirm_large=True)
    assert big.host_count <= MAX_HOSTS
    first = [h.address for h in itertools.islice(big.hosts(), 3)]
    assert first == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_plan_merges_overlaps_and_skips_network_and_broadcast() -> None:
    p = plan(parse_targets(["192.0.2.0/30", "192.0.2.1", "192.0.2.2"]), PORTS)
    assert [h.address for h in p.hosts()] == ["192.0.2.1", "192.0.2.2"]
    assert p.host_count == 2


def test_names_need_addresses() -> None:
    target = parse_target("camera.fleet.test")
    with pytest.raises(ScanResolveError, match="does not resolve"):
        plan([target], PORTS, resolved={})
    p = plan([target], PORTS, resolved={"camera.fleet.test": ["192.0.2.9", "192.0.2.9"]})
    assert [(h.address, h.name) for h in p.hosts()] == [("192.0.2.9", "camera.fleet.test")]


def test_scope_file() -> None:
    scope = Scope.parse(b"# lab\n192.0.2.0/25\n192.0.2.128/25  # the other half\n"
                        b"2001:db8::/64\nbroker.fleet.test\n\n")
    assert scope.entries == 4
    ok = plan(parse_targets(["192.0.2.0/24", "2001:db8::5"]), PORTS, scope=scope)
    assert ok.host_count == 255
    with pytest.raises(ScanScopeError, match="outside the scope"):
        plan([parse_target("192.0.3.1")], PORTS, scope=scope)
    with pytest.raises(ScanScopeError, match="outside the scope"):
        plan([parse_target("192.0.2.0/23")], PORTS, scope=scope)
    # A listed name is in scope wherever it points; another name only inside the ranges.
    plan([parse_target("broker.fleet.test")], PORTS, scope=scope,
         resolved={"broker.fleet.test": ["198.51.100.1"]})
    with pytest.raises(ScanScopeError, match=r"resolves to 198\.51\.100\.2"):
        plan([parse_target("cam.fleet.test")], PORTS, scope=scope,
             resolved={"cam.fleet.test": ["198.51.100.2"]})
    plan([parse_target("cam.fleet.test")], PORTS, scope=scope,
         resolved={"cam.fleet.test": ["192.0.2.77"]})


@pytest.mark.parametrize(("data", "error"), [
    (b"", ScanTargetError), (b"# nothing\n", ScanTargetError),
    (b"10.0.0.0/33\n", ScanTargetError), (b"\xff\xfe", ScanTargetError),
    (b"10.0.0.1\n" * 200_000, InputTooLargeError),
])
def test_bad_scope_files(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        Scope.parse(data)


def test_scope_error_names_the_line() -> None:
    with pytest.raises(ScanTargetError, match="line 3"):
        Scope.parse(b"10.0.0.1\n10.0.0.2\nnot/valid\n")


@given(st.binary(max_size=200))
def test_scope_parser_accepts_or_refuses_cleanly(data: bytes) -> None:
    with contextlib.suppress(ScanTargetError):
        Scope.parse(data)
