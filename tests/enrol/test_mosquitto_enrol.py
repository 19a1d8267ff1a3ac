"""Devices that enrol over EST through a provisioning template use the Mosquitto broker
iotsec renders, with no operator action after the setup: they publish on their own topics
(the template's role), are refused on another device's, keep working across a renewal; a
device awaiting approval gets in only once approved. ``examples/device.py`` does all of it
with a bootstrap secret and no operator credential."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.broker.mosquitto import Layout
from iotsec.device import (
    DeviceCertificate,
    DeviceClient,
    EnrolmentPending,
    EstError,
    MqttNotAuthorizedError,
    RenewalAgent,
    enrol,
)
from tests.broker.support import (
    Inbox,
    mqtt_tls_connect,
    running,
    short_broker_dir,
)
from tests.enrol.sdk_support import claim_ca, claim_files, operator, secret, template, usable_pair
from tests.ports import free_port
from tests.security.serving import Served
from tests.services import require_tool

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "device.py"


@dataclass(frozen=True)
class Broker:
    port: int
    layout: Layout


@pytest.fixture(scope="module")
def broker(est_server: Served) -> Iterator[Broker]:
    """The operator's setup, once: the broker rendered from the (empty) fleet and started,
    a template for sensors (the role 'device': its own topics) and one for devices that
    need an approval."""
    binary = require_tool("mosquitto", "Debian package 'mosquitto'")
    template(est_server, "mq-sensors", "--id-from", "csr-cn")
    template(est_server, "mq-guarded", "--id-from", "serial-number", "--require-approval")
    port = free_port()
    with short_broker_dir("broker") as directory:
        operator(est_server, "broker", "mosquitto", "render", "-o", str(directory), "--port",
                 str(port))
        layout = Layout.parse(directory)
        with running(binary, layout):
            yield Broker(port, layout)


def _client(server: Served, broker: Broker, cert: DeviceCertificate) -> DeviceClient:
    return DeviceClient.from_files(cert.cert_file, cert.key_file, server.chain, "127.0.0.1",
                                   broker.port, timeout=5.0)


def test_a_template_device_publishes_on_its_own_topics_only(
        est_server: Served, broker: Broker, tmp_path: Path) -> None:
    credential = secret(est_server, template="mq-sensors", uses=2)
    cert = enrol(est_server.est_url, dir=tmp_path / "a", ca_file=est_server.chain,
                 secret=credential, common_name="mq-sensor-a", label="mq-sensors")
    enrol(est_server.est_url, dir=tmp_path / "b", ca_file=est_server.chain,
          secret=credential, common_name="mq-sensor-b")
    inbox = Inbox()
    with _client(est_server, broker, cert) as client:
        client.subscribe("devices/mq-sensor-a/#", inbox)
        client.publish("devices/mq-sensor-a/telemetry", b"21.5")
        assert inbox.event.wait(5)
        with pytest.raises(MqttNotAuthorizedError):
            client.publish("devices/mq-sensor-b/telemetry", b"forged")
        # The renewal agent renews over EST; the client reconnects with the new pair.
        renewed: list[DeviceCertificate] = []

        def reconnect(new: DeviceCertificate) -> None:
            renewed.append(new)
            client.reload()

        agent = RenewalAgent(tmp_path / "a", est_server.est_url, est_server.chain,
                             clock=lambda: cert.not_after - timedelta(days=1),
                             on_renewed=reconnect)
        status = agent.run_once()
        assert status.state == "renewed", status.error
        assert client.serial == renewed[0].serial != cert.serial and client.connected
        inbox.event.clear()
        client.publish("devices/mq-sensor-a/telemetry", b"22.0")
        assert inbox.event.wait(5)
    assert [m.payload for m in inbox.messages] == [b"21.5", b"22.0"]


def test_a_device_awaiting_approval_gets_in_only_once_approved(
        est_server: Served, broker: Broker, tmp_path: Path) -> None:
    maker = claim_ca(est_server, "mq-acme", "mq-guarded", tmp_path)
    claim = claim_files(maker, "MQ-HW-7", tmp_path)
    device = tmp_path / "d"

    def poll() -> DeviceCertificate:
        return enrol(est_server.est_url, dir=device, ca_file=est_server.chain, claim=claim,
                     wait=0)

    pending = _first_answer(poll)
    assert isinstance(pending, EnrolmentPending)
    # All the device holds is its claim certificate, which the broker does not accept.
    assert mqtt_tls_connect(broker.port, est_server.chain, *claim).startswith("failed")
    assert mqtt_tls_connect(broker.port, est_server.chain).startswith("failed")
    with pytest.raises(EnrolmentPending):
        poll()
    operator(est_server, "device", "approve", "MQ-HW-7")
    cert = poll()
    assert cert.device_id == "MQ-HW-7"
    usable_pair(device, est_server)
    assert mqtt_tls_connect(broker.port, est_server.chain, cert.cert_file,
                            cert.key_file) == "connected"
    with _client(est_server, broker, cert) as client:
        client.publish("devices/MQ-HW-7/telemetry", b"approved")


def _first_answer(poll: Callable[[], DeviceCertificate]) -> object:
    """The first answer to a claim enrolment, retried while the listener has not yet loaded
    the claim CA just added (it does within seconds)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return poll()
        except EnrolmentPending as exc:
            return exc
        except EstError:
            assert time.monotonic() < deadline, "the claim CA was never trusted"
            time.sleep(0.5)


def test_the_example_device_enrols_and_publishes_with_a_bootstrap_secret(
        est_server: Served, broker: Broker, tmp_path: Path) -> None:
    source = EXAMPLE.read_text()
    assert "Bearer" not in source and "/v1/" not in source and "token" not in source.lower()
    credential = secret(est_server, template="mq-sensors")
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(credential[1])
    env = {k: v for k, v in est_server.env.items() if not k.startswith("IOTSEC_")}
    args = [sys.executable, str(EXAMPLE), "--est", est_server.est_url, "--ca",
            str(est_server.chain), "--secret-id", credential[0], "--secret-file",
            str(secret_file), "--device", "mq-example-1", "--dir", str(tmp_path / "dev"),
            "--broker", "127.0.0.1", "--port", str(broker.port), "--count", "2",
            "--interval", "0.1"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "enrolled mq-example-1" in done.stdout
    assert "sent 2 readings" in done.stdout and "refused" not in done.stdout
    assert credential[1] not in done.stdout + done.stderr
    # A second start uses the certificate it holds (the secret is used up).
    again = subprocess.run(args[:2] + args[2:6] + args[10:], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "enrolled" not in again.stdout and "sent 2 readings" in again.stdout
