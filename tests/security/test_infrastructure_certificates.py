"""Hardening: an operator could freeze revocation at the broker.

The device revoke routes accepted iotsec's own certificates. Once the broker's probe
certificate was revoked, every ``iotsec broker mosquitto sync`` failed its probe and rolled
back, so the broker's CRL never changed again: a device revoked for keyCompromise kept
connecting and publishing. Now the device routes refuse iotsec's certificates, an admin path
revokes one and replaces it at once, and every sync reissues a revoked probe or canary.

The broker tests run a real Mosquitto (``mosquitto -c DIR/mosquitto.conf``, stopped by pid).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from fastapi.testclient import TestClient
from sqlalchemy import select

from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.broker import mosquitto as broker
from iotsec.app.broker.infrastructure import replace_infrastructure
from iotsec.app.pki import cert_records, revocation
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.broker.mosquitto import Layout
from iotsec.cli.main import main
from iotsec.config import Settings
from iotsec.device import DeviceClient
from iotsec.errors import InfrastructureCertificateError
from iotsec.pki.crl import RevocationReason
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import transaction
from tests.broker.conftest import broker_dir, brt, mosquitto, port
from tests.broker.support import Broker, Creds, enroll, mqtt_tls_connect, running
from tests.cli.support import use_home

__all__ = ["broker_dir", "brt", "mosquitto", "port"]


@dataclass
class Live:
    rt: Runtime
    layout: Layout
    broker: Broker
    port: int
    victim: Creds
    bystander: Creds

    def sync(self) -> broker.SyncResult:
        return broker.sync(self.rt, self.layout.root, pid=self.broker.pid)


@pytest.fixture
def live(brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path
         ) -> Iterator[Live]:
    """A rendered broker directory, its Mosquitto running, two enrolled devices."""
    creds = tmp_path / "creds"
    victim = enroll(brt, "thermo-7", creds)
    bystander = enroll(brt, "thermo-8", creds)
    broker.render(brt, broker_dir, broker.BrokerOptions(
        port=port, broker_user=broker.default_broker_user()))
    layout = Layout.parse(broker_dir)
    with running(mosquitto, layout) as process:
        yield Live(brt, layout, process, port, victim, bystander)


def _serial(pem: Path) -> str:
    return format_serial(x509.load_pem_x509_certificates(pem.read_bytes())[0].serial_number)


def _mqtt_connect(s: Live, c: Creds) -> str:
    """A TLS connection with ``c`` and an MQTT CONNECT: 'connected', or why not."""
    return mqtt_tls_connect(s.port, c.ca, c.cert, c.key)


def _publishes(s: Live, c: Creds) -> None:
    with DeviceClient.from_files(c.cert, c.key, c.ca, "127.0.0.1", s.port,
                                 timeout=3.0) as client:
        client.publish(f"devices/{c.device_id}/telemetry", b"21.5")


def _revoke_in_store(rt: Runtime, serial: str) -> None:
    """What the old device route did to the probe: revoke it, and replace nothing."""
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        row = cert_records.locked_certificate(conn, serial)
        revocation.mark_revoked(conn, serial, moment, RevocationReason.unspecified,
                                row.authority_id)


def _assert_refused_as_revoked(s: Live, c: Creds) -> None:
    answer = _mqtt_connect(s, c)
    assert "revoked" in answer, answer


def test_a_revoked_probe_no_longer_freezes_the_brokers_crl(live: Live) -> None:
    """The reported sequence: the probe revoked (as the old route left it), a device
    revoked for keyCompromise, a sync: the broker refuses the device."""
    _publishes(live, live.victim)
    probe = live.layout.private / "probe.pem"
    old_probe = _serial(probe)
    _revoke_in_store(live.rt, old_probe)
    revocation.revoke(live.rt, live.victim.serial, RevocationReason.keyCompromise)
    result = live.sync()  # before the fix: BrokerReloadError, rolled back
    assert result.confirmed and result.reloaded
    _assert_refused_as_revoked(live, live.victim)
    assert _mqtt_connect(live, live.bystander) == "connected"
    # The probe was reissued, and the revoked one is in the broker's CRL too.
    assert _serial(probe) != old_probe
    crls = x509.load_pem_x509_crl((live.layout.current / "crl.pem").read_bytes())
    assert crls.get_revoked_certificate_by_serial_number(int(old_probe, 16)) is not None
    # Later revocations still reach the broker.
    revocation.revoke(live.rt, live.bystander.serial, RevocationReason.keyCompromise)
    live.sync()
    _assert_refused_as_revoked(live, live.bystander)


def test_render_heals_a_revoked_probe_and_canary(live: Live) -> None:
    private = live.layout.private
    old = {name: _serial(private / f"{name}.pem") for name in ("probe", "canary")}
    _revoke_in_store(live.rt, old["probe"])
    with transaction(live.rt.engine) as conn:  # a canary the store does not know
        conn.execute(m.certificates.delete().where(m.certificates.c.serial == old["canary"]))
    live.broker.stop()
    broker.render(live.rt, live.layout.root, broker.options_of(live.layout))
    live.broker.start()
    assert {n: _serial(private / f"{n}.pem") != s for n, s in old.items()} == {
        "probe": True, "canary": True}
    revocation.revoke(live.rt, live.victim.serial, RevocationReason.keyCompromise)
    assert live.sync().confirmed
    _assert_refused_as_revoked(live, live.victim)


def test_the_admin_path_replaces_the_probe_and_revocation_still_reaches_the_broker(
        live: Live) -> None:
    probe = live.layout.private / "probe.pem"
    old_probe = _serial(probe)
    # No pid is given: the broker's own pid file in DIR/run is used.
    done = replace_infrastructure(live.rt, old_probe, RevocationReason.keyCompromise,
                                  broker_dir=live.layout.root)
    assert done.revoked.serial == old_probe and done.revoked.status(live.rt.now()) == "revoked"
    assert done.broker is not None and done.broker.confirmed
    new_probe = _serial(probe)
    assert new_probe != old_probe
    assert [(r.holder.rsplit(" ", 1)[1], r.serial) for r in done.replaced] == [
        ("probe", new_probe)]
    revocation.revoke(live.rt, live.victim.serial, RevocationReason.keyCompromise)
    assert live.sync().confirmed
    _assert_refused_as_revoked(live, live.victim)
    assert _mqtt_connect(live, live.bystander) == "connected"


def test_the_admin_path_replaces_the_brokers_server_certificate(live: Live) -> None:
    server = live.layout.current / "server.pem"
    old = _serial(server)
    done = replace_infrastructure(live.rt, old, RevocationReason.keyCompromise,
                                  broker_dir=live.layout.root)
    assert done.broker is not None and done.broker.server_certificate_issued
    assert _serial(live.layout.current / "server.pem") != old
    assert [r.holder.rsplit(" ", 1)[1] for r in done.replaced] == ["server"]


# --- the device routes and commands refuse; the admin route replaces -----------------------


@pytest.fixture
def infrastructure(rt: Runtime, broker_dir: Path) -> dict[str, str]:
    """The serials of the API's server certificate and a broker's probe and canary."""
    tls = ensure_server_tls(rt, "localhost")
    broker.render(rt, broker_dir, broker.BrokerOptions(broker_user=broker.default_broker_user()),
                  dry_run=False)
    private = Layout.parse(broker_dir).private
    return {"server": _serial(tls.chain_file), "broker-probe": _serial(private / "probe.pem"),
            "broker-canary": _serial(private / "canary.pem"),
            "broker-server": _serial(Layout.parse(broker_dir).current / "server.pem")}


def _revoked_at(rt: Runtime, serial: str) -> object:
    with transaction(rt.engine) as conn:
        return conn.execute(select(m.certificates.c.revoked_at)
                            .where(m.certificates.c.serial == serial)).scalar()


def test_device_routes_refuse_infrastructure_certificates(
        rt: Runtime, api: TestClient, infrastructure: dict[str, str]) -> None:
    for kind in ("server", "broker-probe", "broker-server"):
        serial = infrastructure[kind]
        refused = api.post(f"/v1/certificates/{serial}/revoke", json={"reason": "unspecified"})
        assert refused.status_code == 409, refused.text
        problem = refused.json()
        assert problem["type"] == "urn:iotsec:problem:infrastructure-certificate"
        assert "--infrastructure" in str(problem)
        assert _revoked_at(rt, serial) is None
        with pytest.raises(InfrastructureCertificateError):
            revocation.revoke(rt, serial, RevocationReason.keyCompromise)
        assert _revoked_at(rt, serial) is None


def test_the_admin_route_replaces_the_api_server_certificate(
        rt: Runtime, api: TestClient, infrastructure: dict[str, str]) -> None:
    old = infrastructure["server"]
    _, operator = issue_token(rt, "ops", Scope.OPERATOR, None)
    denied = api.post(f"/v1/infrastructure/certificates/{old}/revoke", json={},
                      headers={"Authorization": f"Bearer {operator}"})
    assert denied.status_code == 403
    assert _revoked_at(rt, old) is None
    done = api.post(f"/v1/infrastructure/certificates/{old}/revoke",
                    json={"reason": "keyCompromise"})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["revoked"]["serial"] == old and body["revoked"]["status"] == "revoked"
    [replaced] = body["replaced"]
    assert replaced["holder"].startswith("api ")
    tls = ensure_server_tls(rt, "localhost")
    assert _serial(tls.chain_file) == replaced["serial"] != old
    # A revocation is final.
    again = api.post(f"/v1/infrastructure/certificates/{old}/revoke", json={})
    assert again.status_code == 409


def test_the_cli_refuses_and_replaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    home = use_home(monkeypatch, tmp_path / "home")
    rt = open_runtime(Settings(home=home))
    try:
        old = _serial(ensure_server_tls(rt, "localhost").chain_file)
        device = enroll(rt, "valve-1", tmp_path / "creds")
    finally:
        rt.close()

    capsys.readouterr()
    assert main(["cert", "revoke", old, "--reason", "keyCompromise"]) == 1
    err = capsys.readouterr().err
    assert "iotsec's own server certificate" in err and "--infrastructure" in err
    assert main(["cert", "revoke", device.serial, "--infrastructure"]) == 1
    assert "belongs to device 'valve-1'" in capsys.readouterr().err
    assert main(["cert", "revoke", old, "--infrastructure", "--reason", "keyCompromise",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["revoked"]["serial"] == old and data["revoked"]["kind"] == "server"
    assert data["revoked"]["status"] == "revoked"
    [replaced] = data["replaced"]
    assert replaced["serial"] != old
    assert main(["cert", "revoke", device.serial, "--reason", "keyCompromise"]) == 0
