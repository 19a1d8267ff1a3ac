"""``iotsec serve`` trusts no proxy header unless told which proxies to trust: a local
client cannot choose the address it is throttled and recorded under (uvicorn's own default
trusts ``X-Forwarded-For`` from loopback)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
import uvicorn

from iotsec.app.events import Event, list_events
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from tests.cli.conftest import cli, cli_home, ready
from tests.cli.support import CONSOLE_SCRIPT, Cli, run_script
from tests.ports import free_port as _free_port
from tests.security.serving import in_thread, recorded_servers, wait_healthy

__all__ = ["cli", "cli_home", "ready"]

BAD = {"Authorization": "Bearer iotsec_0123456789abcdef_" + "A" * 43}
SPOOFING = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9",
            "X-Real-IP": "203.0.113.9"}


class Serving:
    """The API listener's configuration ``iotsec serve`` made, and what to do while it
    serves."""

    def __init__(self) -> None:
        self.drive: Callable[[httpx.Client, Runtime], None] | None = None
        self.config: uvicorn.Config | None = None


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch) -> Serving:
    """``iotsec serve`` in this process, its API listener served with exactly the
    configuration serve made (a real uvicorn server, on the port serve claimed) while
    ``drive`` runs against it, then stopped."""
    serving = Serving()

    def run(configs: Sequence[uvicorn.Config], sockets: Sequence[socket.socket]) -> None:
        serving.config = config = configs[0]
        with in_thread(config, [sockets[0]]):
            assert serving.drive is not None
            with httpx.Client(base_url=f"http://127.0.0.1:{config.port}",
                              timeout=10) as client:
                serving.drive(client, config.app.state.runtime)  # type: ignore[union-attr]

    recorded_servers(monkeypatch, run)
    return serving


def _auth_failures(rt: Runtime) -> list[Event]:
    rt.events.flush()
    return [e for e in list_events(rt.engine, kind="auth") if e.outcome == "failure"]


def test_the_default_config_turns_proxy_headers_off(cli: Cli, ready: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = recorded_servers(monkeypatch)
    # uvicorn reads FORWARDED_ALLOW_IPS when it is not given the addresses: that must not
    # turn the headers back on either.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    cli.ok("serve", "--http", "--port", str(_free_port()), "--est-port", str(_free_port()))
    # Neither listener's: the EST listener's identities come from the TLS layer alone.
    ((api, est),) = recorded
    for config in (api, est):
        assert config.proxy_headers is False
        assert not isinstance(config.loaded_app, uvicorn.middleware.proxy_headers
                              .ProxyHeadersMiddleware)


def test_named_proxies_are_the_only_ones_trusted(cli: Cli, ready: object,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = recorded_servers(monkeypatch)
    cli.ok("serve", "--http", "--port", str(_free_port()), "--est-port", "0",
           "--forwarded-allow-ips", "10.0.0.5, 192.0.2.0/24,::1")
    ((config,),) = recorded
    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == ["10.0.0.5", "192.0.2.0/24", "::1"]
    for bad in ("*", "", "proxy.example", "10.0.0.5,*", "192.0.2.1/24"):
        assert "--forwarded-allow-ips" in cli.refused("serve", "--http",
                                                      "--forwarded-allow-ips", bad)
    assert len(recorded) == 1
    assert "--forwarded-allow-ips" in cli.ok("serve", "--help").out


def test_a_forwarded_for_header_from_loopback_is_ignored(
        cli: Cli, ready: object, monkeypatch: pytest.MonkeyPatch, serving: Serving) -> None:
    monkeypatch.setenv("IOTSEC_AUTH_FAILURE_LIMIT", "3")
    statuses: list[int] = []
    sources: list[str | None] = []

    def drive(client: httpx.Client, rt: Runtime) -> None:
        # Each failure claims another address: all of them count against the real one.
        for i in range(3):
            statuses.append(client.get("/v1/devices", headers={
                **BAD, "X-Forwarded-For": f"203.0.113.{i + 1}"}).status_code)
        statuses.append(client.get("/v1/devices", headers={**BAD, **SPOOFING}).status_code)
        sources.extend(e.source for e in _auth_failures(rt))

    serving.drive = drive
    cli.ok("serve", "--http", "--port", str(_free_port()), "--est-port", "0")
    assert statuses == [401, 401, 401, 429]
    assert sources == ["127.0.0.1"] * 3
    assert serving.config is not None and serving.config.proxy_headers is False


def test_a_named_proxy_may_forward_the_client_address(
        cli: Cli, ready: object, serving: Serving) -> None:
    sources: list[str | None] = []

    def drive(client: httpx.Client, rt: Runtime) -> None:
        assert client.get("/v1/devices", headers={**BAD, **SPOOFING}).status_code == 401
        sources.extend(e.source for e in _auth_failures(rt))

    serving.drive = drive
    cli.ok("serve", "--http", "--port", str(_free_port()), "--est-port", "0",
           "--forwarded-allow-ips", "127.0.0.1")
    assert serving.config is not None and serving.config.proxy_headers is True
    assert sources == ["203.0.113.9"]


def test_a_served_process_ignores_forwarded_for(tmp_path: Path) -> None:
    """End to end: the installed ``iotsec serve``, with uvicorn's own environment variable
    asking to trust every proxy."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env.update(IOTSEC_HOME=str(home), IOTSEC_AUTH_FAILURE_LIMIT="3", FORWARDED_ALLOW_IPS="*")
    init = run_script("init", "--store-passphrase", "--json", env=env)
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["admin_token"]
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--http", "--port", str(port),
                                   "--est-port", "0"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
                wait_healthy(client, server, log_path)
                statuses = [client.get("/v1/devices", headers={
                    **BAD, "X-Forwarded-For": f"203.0.113.{i + 1}"}).status_code
                    for i in range(3)]
                statuses.append(client.get("/v1/devices", headers={**BAD, **SPOOFING}
                                           ).status_code)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    assert statuses == [401, 401, 401, 429], log_path.read_text()
    rt = open_runtime(Settings(home=home))
    try:
        assert [e.source for e in _auth_failures(rt)] == ["127.0.0.1"] * 3
    finally:
        rt.close()
