"""``iotsec serve`` closes connections that hold a descriptor without making progress: request
headers that trickle in, a connection that sends nothing (over TLS too), a TCP connection that
never starts its TLS handshake, and connections beyond the cap. Before, none of them was ever
closed (a TLS handshake after asyncio's 60 s), and enough of them exhausted the file limit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from iotsec.api.connections import GuardedHttp
from iotsec.cli.serve import FILE_RESERVE, MAX_CONNECTIONS, connection_limit, uvicorn_options
from iotsec.errors import InvalidInputError
from tests.cli.conftest import cli, cli_home, ready
from tests.cli.support import Cli
from tests.ports import free_port
from tests.security.serving import (
    connect,
    in_thread,
    is_closed,
    recorded_servers,
    served,
    wait_closed,
)

__all__ = ["cli", "cli_home", "ready"]

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


def test_request_headers_that_trickle_in_are_cut_off(tmp_path: Path) -> None:
    with served(tmp_path, "--header-timeout", "1", "--idle-timeout", "60", tls=False) as srv:
        stalled = srv.connect(send=b"GET /hea")  # half a request line, then nothing
        slow = srv.connect(send=PARTIAL)
        # One more byte every 0.2 s does not buy more time.
        took = wait_closed([stalled, slow], within=8, trickle=[slow])
        assert took > 0.5
        with srv.client() as client:
            assert client.get("/healthz").status_code == 200


def test_an_idle_tls_connection_is_closed(tmp_path: Path) -> None:
    with served(tmp_path, "--idle-timeout", "1", "--header-timeout", "60",
                "--handshake-timeout", "60") as srv:
        idle = srv.connect(handshake=True)
        assert wait_closed([idle], within=8) > 0.5


def test_a_connection_that_never_starts_tls_is_dropped(tmp_path: Path) -> None:
    with served(tmp_path, "--handshake-timeout", "1", "--idle-timeout", "60",
                "--header-timeout", "60") as srv:
        silent = srv.connect()
        half = srv.connect(send=b"\x16\x03\x01\x02\x00\x01")  # a ClientHello cut short
        assert wait_closed([silent, half], within=8) > 0.5


def test_many_slow_connections_are_all_closed_and_the_server_still_answers(
        tmp_path: Path) -> None:
    with served(tmp_path, "--handshake-timeout", "4", "--idle-timeout", "4",
                "--header-timeout", "4") as srv:
        before = srv.open_files()
        silent = [srv.connect() for _ in range(100)]
        idle = [srv.connect(handshake=True) for _ in range(50)]
        slow = [srv.connect(handshake=True, send=PARTIAL) for _ in range(50)]
        # All 200 are open at once, each holding a descriptor of the server.
        time.sleep(0.3)
        assert srv.open_files() >= before + 190
        wait_closed(silent + idle + slow, within=20, trickle=slow)
        deadline = time.monotonic() + 10
        while srv.open_files() > before + 2:
            assert time.monotonic() < deadline, (before, srv.open_files())
            time.sleep(0.1)
        with srv.client() as client:
            assert client.get("/healthz").status_code == 200


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    with served(tmp_path, "--limit-concurrency", "5", "--idle-timeout", "60",
                tls=False) as srv:
        held = [srv.connect() for _ in range(5)]
        extra = [srv.connect() for _ in range(3)]
        assert wait_closed(extra, within=3) < 2
        assert not any(is_closed(s) for s in held)
        for sock in held:
            sock.close()
        with srv.client() as client:
            assert client.get("/healthz").status_code == 200


def test_the_connection_limit_fits_the_file_limit() -> None:
    assert connection_limit(None, 1_000_000) == MAX_CONNECTIONS
    assert connection_limit(None, 1024) == 1024 - FILE_RESERVE
    assert connection_limit(100, 1024) == 100
    with pytest.raises(InvalidInputError, match="--limit-concurrency"):
        connection_limit(1024, 1024)


def test_serve_raises_the_soft_file_limit_and_documents_its_settings(
        cli: Cli, ready: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    recorded = recorded_servers(monkeypatch)
    try:
        if soft > 512:
            resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        cli.ok("serve", "--http", "--port", str(free_port()), "--est-port", str(free_port()))
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    # The same limits on both listeners.
    ((api, est),) = recorded
    for config in (api, est):
        assert config.limit_concurrency == min(MAX_CONNECTIONS, hard - FILE_RESERVE)
        assert config.timeout_keep_alive == 5
        assert config.http.header_timeout == 10  # type: ignore[union-attr]
        assert config.loop.handshake_timeout == 10  # type: ignore[union-attr]
    assert "--limit-concurrency" in cli.refused("serve", "--http", "--limit-concurrency",
                                                str(hard))
    shown = cli.ok("serve", "--help").out
    for option in ("--header-timeout", "--idle-timeout", "--handshake-timeout",
                   "--limit-concurrency"):
        assert option in shown


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_both_http_parsers_cut_off_slow_headers(parser: str, tmp_path: Path) -> None:
    """The same protocol settings over h11 (pure Python) as over httptools, on a uvicorn
    server with exactly the options ``iotsec serve`` gives it."""
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    port = free_port()
    options = uvicorn_options(host="127.0.0.1", port=port, tls=None)
    options["http"] = GuardedHttp(header_timeout=0.5, parser=parser)  # type: ignore[arg-type]
    options["timeout_keep_alive"] = 60
    with in_thread(uvicorn.Config(app, **options)):
        slow = connect(port, send=PARTIAL)
        assert 0.3 < wait_closed([slow], within=5, trickle=[slow]) < 3
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            # A keep-alive connection that sends one request after another is not cut off.
            for _ in range(3):
                assert client.get("/ping").json() == {"pong": "yes"}
                time.sleep(0.3)

