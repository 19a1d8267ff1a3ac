"""The TCP connect scanner against sockets this test opens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from iotsec.netprobe.ports import tcp_connect_scan
from iotsec.scan.model import PortScanConfig

HOST = "127.0.0.1"


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    socks = []
    for _ in range(3):
        s = socket.socket()
        s.bind((HOST, 0))
        s.listen(64)
        socks.append(s)
    yield [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()


def closed_ports(n: int) -> list[int]:
    out = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind((HOST, 0))
            out.append(s.getsockname()[1])
    return out


def test_open_and_closed(listeners: list[int]) -> None:
    shut = closed_ports(20)
    items = [(HOST, p) for p in sorted(set(shut) - set(listeners)) + listeners]
    result = asyncio.run(tcp_connect_scan(items, PortScanConfig(concurrency=8)))
    assert result.open == sorted((HOST, p) for p in listeners)
    assert result.attempted == len(items)
    assert result.closed == len(items) - len(listeners)
    assert result.filtered == result.unreachable == 0


def test_concurrency_one_and_a_lazy_iterator(listeners: list[int]) -> None:
    seen = []

    def items() -> Iterator[tuple[str, int]]:
        for p in listeners:
            seen.append(p)
            yield HOST, p

    result = asyncio.run(tcp_connect_scan(items(), PortScanConfig(concurrency=1)))
    assert [p for _h, p in result.open] == sorted(listeners) and seen == listeners


def test_rate_limit_bounds_the_attempts() -> None:
    ports = closed_ports(60)
    start = time.perf_counter()
    result = asyncio.run(tcp_connect_scan([(HOST, p) for p in ports],
                                          PortScanConfig(concurrency=100, rate=100)))
    elapsed = time.perf_counter() - start
    assert result.attempted == 60
    # A burst of rate/10 = 10, then 100 per second for the other 50: at least 0.45 s.
    assert elapsed >= 0.45


def test_a_full_port_range_finds_exactly_the_listeners(listeners: list[int]) -> None:
    lo, hi = min(listeners) - 500, max(listeners) + 500
    items = [(HOST, p) for p in range(max(1, lo), min(65535, hi) + 1)]
    result = asyncio.run(tcp_connect_scan(items, PortScanConfig(concurrency=500)))
    found = {p for _h, p in result.open}
    assert set(listeners) <= found
    # Anything else open in that window belongs to other processes on this machine and
    # must really be open: connect to it once more.
    for port in found - set(listeners):
        with socket.create_connection((HOST, port), 1):
            pass


@pytest.mark.parametrize("kwargs", [{"concurrency": 0}, {"concurrency": 10**6},
                                    {"rate": -1}, {"timeout": 0}, {"timeout": 100}])
def test_config_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PortScanConfig(**kwargs)  # type: ignore[arg-type]
