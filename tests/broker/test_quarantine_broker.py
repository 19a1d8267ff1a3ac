"""Quarantine against a real Mosquitto: the live session is dropped, and the device comes
back to its remediation topic only, within 5 s; release gives its topics back; with
--revoke it is refused at the TLS handshake; a device disabled with a broker directory set
is refused at once. Each test starts its own broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from iotsec.app.broker import mosquitto as service
from iotsec.app.broker.device_state import change_state_and_sync
from iotsec.app.events import list_events
from iotsec.app.monitor.quarantine import quarantine_devices, release_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.device import DeviceClient, MqttNotAuthorizedError
from iotsec.identity.registry import DeviceState
from tests.broker.support import Broker, Creds, Inbox, enroll, mqtt_tls_connect, running, wait_for


@dataclass
class Setup:
    rt: Runtime
    layout: Layout
    broker: Broker
    port: int
    creds: Path

    def client(self, c: Creds) -> DeviceClient:
        return DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", self.port,
                                       timeout=3.0, min_backoff=0.5, max_backoff=0.5)


@pytest.fixture
def setup(brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path
          ) -> Iterator[Setup]:
    service.render(brt, broker_dir, service.BrokerOptions(
        port=port, broker_user=service.default_broker_user()))
    layout = Layout.parse(broker_dir)
    with running(mosquitto, layout) as broker:
        yield Setup(brt, layout, broker, port, tmp_path / "creds")


def _publishes(client: DeviceClient, topic: str) -> bool:
    try:
        client.publish(topic, b"x", qos=1)
    except MqttNotAuthorizedError:
        return False
    return True


def test_quarantine_drops_the_session_and_leaves_only_the_remediation_topic(
        setup: Setup) -> None:
    cam = enroll(setup.rt, "cam-7", setup.creds)
    service.sync(setup.rt, setup.layout.root)
    client = setup.client(cam)
    client.connect()
    assert _publishes(client, "devices/cam-7/telemetry")
    start = time.monotonic()
    result = quarantine_devices(setup.rt, Selector.parse(["cam-7"]), reason="scanning",
                                actor="alice", broker_dir=setup.layout.root)
    assert result.kicked == ("cam-7",)
    assert wait_for(lambda: not client.connected, 5 - (time.monotonic() - start))
    dropped = time.monotonic() - start
    # The SDK reconnects by itself: under the quarantine role only.
    assert wait_for(lambda: client.connected, 5 - (time.monotonic() - start))
    inbox = Inbox()
    client.subscribe("quarantine/cam-7/#", inbox)
    assert _publishes(client, "quarantine/cam-7/status")
    assert inbox.event.wait(5 - (time.monotonic() - start))
    assert not _publishes(client, "devices/cam-7/telemetry")
    assert not _publishes(client, "quarantine/cam-8/status")
    assert time.monotonic() - start < 5, f"dropped after {dropped:.2f} s"
    kick = list_events(setup.rt.engine, kind="broker.kick", actor="cam-7")[0]
    assert kick.detail == {"reason": "quarantined"}
    acl = (setup.layout.current / "acl").read_text()
    assert "user cam-7\ntopic deny devices/cam-7/#" in acl
    # A later sync does not drop it again; release gives its topics back without a drop.
    assert service.sync(setup.rt, setup.layout.root).kicked == ()
    released = release_devices(setup.rt, ["cam-7"], actor="bob",
                               broker_dir=setup.layout.root)
    assert released.released == (("cam-7", "active"),) and released.kicked == ()
    assert _publishes(client, "devices/cam-7/telemetry")
    assert not _publishes(client, "quarantine/cam-7/status")
    client.close()


def test_quarantine_with_revoke_refuses_the_handshake(setup: Setup) -> None:
    cam = enroll(setup.rt, "cam-8", setup.creds)
    service.sync(setup.rt, setup.layout.root)
    assert mqtt_tls_connect(setup.port, cam.ca, cam.cert, cam.key) == "connected"
    result = quarantine_devices(setup.rt, Selector.parse(["cam-8"]), revoke=True,
                                actor="alice", broker_dir=setup.layout.root)
    assert result.revoked == (cam.serial,)
    assert "revoked" in mqtt_tls_connect(setup.port, cam.ca, cam.cert, cam.key)


def test_disable_with_a_broker_dir_refuses_the_device_at_once(setup: Setup) -> None:
    """'device disable' (and the API route) with IOTSEC_BROKER_DIR: the sync is part of
    the command, so the next CONNECT fails at the handshake; enabling lets it in again."""
    cam = enroll(setup.rt, "cam-9", setup.creds)
    setup.rt.settings.broker_dir = setup.layout.root
    change_state_and_sync(setup.rt, "cam-9", DeviceState.ACTIVE)
    client = setup.client(cam)
    client.connect()
    start = time.monotonic()
    change_state_and_sync(setup.rt, "cam-9", DeviceState.DISABLED, actor="alice")
    assert wait_for(lambda: not client.connected, 5 - (time.monotonic() - start))
    client.close()
    assert "revoked" in mqtt_tls_connect(setup.port, cam.ca, cam.cert, cam.key)
    change_state_and_sync(setup.rt, "cam-9", DeviceState.ACTIVE, actor="alice")
    assert mqtt_tls_connect(setup.port, cam.ca, cam.cert, cam.key) == "connected"
