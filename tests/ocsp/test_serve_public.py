"""``iotsec serve --public-http-port``: a third listener, plain HTTP on any address."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import uvicorn

from iotsec.api.public_http import PublicApp
from tests.cli.support import Cli
from tests.ports import free_port
from tests.security.serving import recorded_servers


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[list[uvicorn.Config]]:
    return recorded_servers(monkeypatch)


def test_the_public_listener_is_a_third_server(cli: Cli, ready: object, cli_home: Path,
                                               fake_uvicorn: list[list[uvicorn.Config]]
                                               ) -> None:
    port, est, public = free_port(), free_port(), free_port()
    cli.ok("serve", "--port", str(port), "--est-port", str(est), "--public-http-port",
           str(public), "--public-http-host", "0.0.0.0")  # noqa: S104
    ((api, _enrol, plain),) = fake_uvicorn
    assert api.ssl_certfile is not None
    # Plain HTTP on any address, serving only the public application.
    assert (plain.host, plain.port) == ("0.0.0.0", public)  # noqa: S104
    assert plain.ssl_certfile is None and plain.ws == "none" and not plain.proxy_headers
    assert isinstance(plain.app, PublicApp)
    # serve made each CA's responder certificate before it answered.
    assert sorted(p.name for p in (cli_home / "ocsp").glob("*.pem")) == [
        "responder-1.pem", "responder-2.pem"]


def test_the_public_port_must_be_its_own(cli: Cli, ready: object,
                                         fake_uvicorn: list[list[uvicorn.Config]]) -> None:
    port = free_port()
    message = cli.refused("serve", "--port", str(port), "--est-port", "0",
                          "--public-http-port", str(port))
    assert "--public-http-port" in message
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        message = cli.refused("serve", "--port", str(free_port()), "--est-port", "0",
                              "--public-http-port", str(busy))
    assert "--public-http-port" in message
    assert fake_uvicorn == []
