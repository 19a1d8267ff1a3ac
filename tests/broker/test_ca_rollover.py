"""CA rollover against a real Mosquitto: ``rotate_ca`` re-renders the broker's trust bundle
and reloads the running broker, which accepts devices of the retiring CA and of the new one
during the overlap; after ``retire_ca`` it refuses the retired CA's devices. With a new
root, a device that trusts only the old root still verifies the broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from iotsec.app.broker import mosquitto as service
from iotsec.app.broker.rollover import retire_ca, rotate_ca
from iotsec.app.pki import authorities
from iotsec.app.pki.bundles import chain_pem
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.errors import BrokerConfigError
from tests.broker.support import enroll, mqtt_tls_connect, running


def _render(rt: Runtime, broker_dir: Path, port: int) -> Layout:
    service.render(rt, broker_dir, service.BrokerOptions(
        port=port, broker_user=service.default_broker_user()))
    return Layout.parse(broker_dir)


def test_overlap_accepts_both_cas_and_retire_refuses_the_old(
        brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path) -> None:
    old = enroll(brt, "alice", tmp_path / "old")
    layout = _render(brt, broker_dir, port)
    with running(mosquitto, layout) as broker:
        assert mqtt_tls_connect(port, old.ca, old.cert, old.key) == "connected"
        old_issuing = brt.issuing_id()
        change = rotate_ca(brt, broker_dir=broker_dir)
        assert change.broker is not None and change.broker.reloaded
        assert [a.state for a in change.changed] == ["active", "retiring"]
        new = enroll(brt, "bob", tmp_path / "new")
        assert new.ca.read_text() == chain_pem(brt) != old.ca.read_text()
        # The overlap: both CAs' devices are accepted, and the broker's own certificate
        # (reissued by the new CA) verifies for both.
        assert mqtt_tls_connect(port, old.ca, old.cert, old.key) == "connected"
        assert mqtt_tls_connect(port, new.ca, new.cert, new.key) == "connected"
        ca_file = (layout.current / "ca.pem").read_text()
        assert ca_file.count("BEGIN CERTIFICATE") == 3
        assert (layout.current / "crl.pem").read_text().count("BEGIN X509 CRL") == 3
        # The end of the overlap: the retired CA leaves the broker's trust bundle.
        retired = retire_ca(brt, old_issuing, broker_dir=broker_dir)
        assert retired.broker is not None and retired.broker.reloaded
        assert mqtt_tls_connect(port, old.ca, old.cert, old.key).startswith("failed")
        assert mqtt_tls_connect(port, new.ca, new.cert, new.key) == "connected"
        assert (layout.current / "ca.pem").read_text().count("BEGIN CERTIFICATE") == 2
        assert broker.proc is not None and broker.proc.poll() is None


def test_new_root_keeps_devices_that_trust_only_the_old_root(
        brt: Runtime, broker_dir: Path, port: int, mosquitto: str, tmp_path: Path) -> None:
    old = enroll(brt, "carol", tmp_path / "old")
    layout = _render(brt, broker_dir, port)
    with running(mosquitto, layout):
        rotate_ca(brt, new_root=True, broker_dir=broker_dir)
        new = enroll(brt, "dave", tmp_path / "new")
        # carol's CA file names only the old chain: the broker's new server certificate
        # still verifies through the cross certificate it sends.
        assert mqtt_tls_connect(port, old.ca, old.cert, old.key) == "connected"
        assert mqtt_tls_connect(port, new.ca, new.cert, new.key) == "connected"
        # dave, with carol's old CA file: the broker accepts his certificate and he
        # verifies the broker through the cross certificate.
        assert mqtt_tls_connect(port, old.ca, new.cert, new.key) == "connected"


def test_an_unrendered_broker_dir_is_refused_before_the_rotation(
        brt: Runtime, tmp_path: Path) -> None:
    before = brt.issuing_id()
    with pytest.raises(BrokerConfigError):
        rotate_ca(brt, broker_dir=tmp_path / "nothing-here")
    assert brt.issuing_id() == before


def test_a_rotation_elsewhere_makes_a_sync_needed(brt: Runtime, broker_dir: Path) -> None:
    service.render(brt, broker_dir, service.BrokerOptions(
        broker_user=service.default_broker_user()), dry_run=False)
    assert not service.sync_needed(brt, broker_dir)
    old = brt.issuing_id()
    authorities.rotate(brt)  # e.g. through the API of another process: no broker touched
    assert service.sync_needed(brt, broker_dir)
    service.sync(brt, broker_dir, dry_run=False)
    assert not service.sync_needed(brt, broker_dir)
    authorities.retire(brt, old)
    assert service.sync_needed(brt, broker_dir)
    service.sync(brt, broker_dir, dry_run=False)
    layout = Layout.parse(broker_dir)
    bundle = (layout.current / "ca.pem").read_text()
    assert authorities.get_authority(brt, old).certificate.subject.rfc4514_string() \
        not in {c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(
            bundle.encode())}
