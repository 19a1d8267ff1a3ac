"""Services are identified while the port phase goes on (from the moment each port is found
open), with the same results as after it: the lab scanned while the connect loop keeps the
event loop busy, and the identification of a port that proves not to be open is dropped."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Iterator

import pytest

from iotsec.app import scan as scan_app
from iotsec.netprobe import runner
from iotsec.scan.model import PortScanConfig, PortScanResult, ProbeConfig, Service
from tests.scan.conftest import SERVICES, UDP_FIXTURES, Lab, fast_options
from tests.scan.test_lab import expected, found

HOST = "127.0.0.1"
OnOpen = Callable[[str, int], None] | None


@pytest.fixture
def refused_ports() -> Iterator[list[int]]:
    """Ports bound here and never listened on: every connection to them is refused."""
    socks = []
    try:
        for _ in range(500):
            sock = socket.socket()
            sock.bind((HOST, 0))
            socks.append(sock)
        yield [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def test_the_lab_is_identified_alike_during_a_busy_port_phase(
        lab: Lab, refused_ports: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    real_scan, real_identify = runner.tcp_connect_scan, runner.identify_tcp
    seen: list[object] = []

    async def long_port_phase(items: Iterable[tuple[str, int]],
                              config: PortScanConfig | None = None, *,
                              on_open: OnOpen = None) -> PortScanResult:
        result = await real_scan(items, config, on_open=on_open)
        # The rest of a long port phase: two seconds of refused connections, the connect
        # loop keeping the event loop as busy as on a whole range of the host's own ports.
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0
        while loop.time() < end:
            await real_scan([(HOST, p) for p in refused_ports], config)
        seen.append("port phase over")
        return result

    async def identify(host: str, port: int, cfg: ProbeConfig | None = None, *,
                       server_name: str | None = None) -> Service:
        seen.append(port)
        return await real_identify(host, port, cfg, server_name=server_name)

    monkeypatch.setattr(runner, "tcp_connect_scan", long_port_phase)
    monkeypatch.setattr(runner, "identify_tcp", identify)
    result = scan_app.scan(scan_app.ScanRequest(targets=[HOST], ports=lab.spec(),
                                                options=fast_options()), rt=lab.rt)
    # Every TCP service was being identified before the port phase was over ...
    tcp = {p for name, p in lab.ports.items() if name not in UDP_FIXTURES}
    assert set(seen[:seen.index("port phase over")]) == tcp
    # ... and came out exactly as in a scan that identifies them after it.
    assert found(lab, result) == expected(*lab.ports)
    assert {lab.name_of(s.port, s.transport): s.name for s in result.services} == SERVICES


def test_an_identification_begun_for_a_port_that_proves_closed_is_dropped(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # The port phase names the silent fixture as found open, and then does not report it
    # (as when one of the scan's own sockets answered on this host): its identification,
    # still waiting for a banner, is cancelled, and it is no service of the result.
    real_scan = runner.tcp_connect_scan
    silent = lab.ports["silent"]

    async def phase(items: Iterable[tuple[str, int]], config: PortScanConfig | None = None,
                    *, on_open: OnOpen = None) -> PortScanResult:
        assert on_open is not None
        on_open(HOST, silent)
        await asyncio.sleep(0.05)
        result = await real_scan(items, config, on_open=on_open)
        result.open.remove((HOST, silent))
        result.closed += 1
        return result

    monkeypatch.setattr(runner, "tcp_connect_scan", phase)
    result = scan_app.scan(scan_app.ScanRequest(
        targets=[HOST], ports=lab.spec("silent", "ssh"), options=fast_options()), rt=lab.rt)
    assert [(s.port, s.name) for s in result.services] == [(lab.ports["ssh"], "ssh")]
    assert (HOST, silent) not in result.port_stats.open
