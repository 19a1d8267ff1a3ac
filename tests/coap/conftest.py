"""CoAP gateway fixtures: a home with the real clock (SQLite and PostgreSQL), a rendered and
running Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from iotsec.access.policy import Role, Rule
from iotsec.app.access.roles import add_role
from iotsec.app.broker import mosquitto as broker_service
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.broker.mosquitto import Layout
from iotsec.config import Settings
from tests.broker.support import Broker, Creds, enroll, running, short_broker_dir
from tests.ports import free_port
from tests.services import require_tool


@pytest.fixture(scope="session")
def coap_client_bin() -> str:
    return require_tool("coap-client-openssl", "Debian package 'libcoap3-bin'")


@pytest.fixture
def crt(tmp_path: Path, database_url: str | None) -> Iterator[Runtime]:
    """A home on SQLite and on PostgreSQL, made a week ago (a test may revoke or expire)."""
    settings = Settings(home=tmp_path / "home", database_url=database_url)
    init_home(settings, now=datetime.now(UTC) - timedelta(days=7), store_passphrase=True)
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


@dataclass
class Fleet:
    rt: Runtime
    broker: Broker
    mqtt_port: int
    alice: Creds
    bob: Creds
    #: An MQTT client that may publish commands to every device.
    dash: Creds


@pytest.fixture
def fleet(crt: Runtime, tmp_path: Path) -> Iterator[Fleet]:
    mosquitto = require_tool("mosquitto", "Debian package 'mosquitto'")
    creds = tmp_path / "creds"
    alice = enroll(crt, "alice", creds)
    bob = enroll(crt, "bob", creds)
    add_role(crt, Role.build("dashboard", [Rule.parse("allow", "publish", "commands/#")]))
    dash = enroll(crt, "dash", creds, roles=("dashboard",))
    port = free_port()
    with short_broker_dir("broker") as broker_dir:
        broker_service.render(crt, broker_dir, broker_service.BrokerOptions(
            port=port, broker_user=broker_service.default_broker_user()))
        with running(mosquitto, Layout.parse(broker_dir)) as broker:
            yield Fleet(crt, broker, port, alice, bob, dash)
