"""Bad input and misbehaving hosts: each is refused or cut off, none hangs or crashes."""

from __future__ import annotations

import asyncio
import time

import pytest

from iotsec.app import scan as scan_app
from iotsec.errors import ScanResolveError, ScanScopeError, ScanTargetError
from iotsec.netprobe import tls as tls_probe
from iotsec.netprobe.identify import identify_tcp
from iotsec.netprobe.net import resolve_names
from iotsec.scan.model import ProbeConfig, TlsConfig
from tests.scan.conftest import Lab, fast_options

HOST = "127.0.0.1"


def timed(coro: object) -> tuple[object, float]:
    start = time.perf_counter()
    result = asyncio.run(coro)  # type: ignore[arg-type]
    return result, time.perf_counter() - start


def test_host_that_accepts_and_never_answers(lab: Lab) -> None:
    cfg = ProbeConfig()
    service, elapsed = timed(identify_tcp(HOST, lab.ports["silent"], cfg))
    assert service.protocol == "unknown"  # type: ignore[attr-defined]
    assert "no answer" in service.notes[0]  # type: ignore[attr-defined]
    # The banner wait, the probes at once, and the HTTP probe alone (a server that serves one
    # connection at a time looks silent to probes sent at once): no more.
    assert elapsed < cfg.banner_wait + 2 * cfg.probe_timeout + 0.5


def test_endless_banner_is_cut_at_the_read_limit(lab: Lab) -> None:
    cfg = ProbeConfig(read_limit=4096)
    service, elapsed = timed(identify_tcp(HOST, lab.ports["endless"], cfg))
    assert service.details["banner_overflow"] is True  # type: ignore[attr-defined]
    assert len(service.banner or "") <= 203  # 200 characters and "..."  # type: ignore[attr-defined]
    assert elapsed < 1.0


def test_tls_server_that_stalls_mid_handshake(lab: Lab) -> None:
    cfg = ProbeConfig()
    service, elapsed = timed(identify_tcp(HOST, lab.ports["tls_stall"], cfg))
    assert service.name == "tls"  # type: ignore[attr-defined]
    assert elapsed < cfg.banner_wait + 2 * cfg.probe_timeout + 0.5
    obs, audit = timed(tls_probe.observe(HOST, lab.ports["tls_stall"],
                                   config=TlsConfig(timeout=0.5)))
    assert obs.error is not None and "did not complete" in obs.error  # type: ignore[attr-defined]
    assert audit < 1.0


def test_closed_port_is_not_a_hang() -> None:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    service, elapsed = timed(identify_tcp(HOST, port))
    assert service.protocol == "unknown" and elapsed < 1  # type: ignore[attr-defined]
    obs, elapsed = timed(tls_probe.observe(HOST, port))
    assert obs.error is not None and elapsed < 1  # type: ignore[attr-defined]


def test_unresolvable_names() -> None:
    with pytest.raises(ScanResolveError, match=r"does-not-exist\.invalid"):
        asyncio.run(resolve_names(["does-not-exist.invalid"], timeout=5))
    with pytest.raises(ScanResolveError, match="does not resolve"):
        scan_app.scan(scan_app.ScanRequest(targets=["nothing-here.invalid"], ports="22"))


@pytest.mark.parametrize(("targets", "ports", "error", "match"), [
    (["10.0.0.0/33"], "22", ScanTargetError, "CIDR"),
    (["127.0.0.1"], "0", ScanTargetError, "outside 1-65535"),
    (["127.0.0.1"], "65536", ScanTargetError, "outside 1-65535"),
    (["10.0.0.0/8"], "22", ScanScopeError, "/8"),
    ([], "22", ScanTargetError, "no target"),
])
def test_refused_before_any_packet(targets: list[str], ports: str,
                                   error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        scan_app.scan(scan_app.ScanRequest(targets=targets, ports=ports))


def test_targets_outside_the_scope_file(lab: Lab) -> None:
    scope = lab.directory / "scope.txt"
    scope.write_text("127.0.0.2/32\n")
    request = scan_app.ScanRequest(targets=[HOST], ports=lab.spec("ssh"), scope_file=scope,
                                   options=fast_options())
    with pytest.raises(ScanScopeError, match="outside the scope"):
        scan_app.scan(request)
    scope.write_text("# the lab\n127.0.0.0/8\n")
    result = scan_app.scan(request)
    assert [s.name for s in result.services] == ["ssh"] and result.scope == str(scope)


def test_missing_scope_file() -> None:
    from iotsec.errors import NotFoundError

    with pytest.raises(NotFoundError):
        scan_app.scan(scan_app.ScanRequest(targets=[HOST], ports="22",
                                           scope_file=__import__("pathlib").Path("/nope")))


def test_with_nmap_without_nmap(monkeypatch: pytest.MonkeyPatch) -> None:
    from iotsec.errors import ScanToolError

    monkeypatch.setattr(scan_app.shutil, "which", lambda _name: None)
    with pytest.raises(ScanToolError, match="nmap is not installed"):
        scan_app.scan(scan_app.ScanRequest(targets=[HOST], ports="22", with_nmap=True))
