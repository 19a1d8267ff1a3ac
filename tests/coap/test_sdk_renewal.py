"""The device SDK's CoAP client across a certificate renewal (SQLite and PostgreSQL): after
the renewal replaced the files, ``reload`` makes a new DTLS session with the new pair and
observes again; a pair that does not load or names another device changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iotsec.app.pki.revocation import revoke
from iotsec.coap.message import Code
from iotsec.device import CoapClient, CoapClientError, DeviceClient
from iotsec.errors import InvalidInputError
from iotsec.pki.crl import RevocationReason
from tests.broker.support import enroll
from tests.coap.conftest import Fleet
from tests.coap.support import client, gateway


def test_reload_uses_the_renewed_pair_and_observes_again(fleet: Fleet, tmp_path: Path) -> None:
    alice = fleet.alice
    # The files the device keeps (a renewal replaces them in place).
    own = tmp_path / "device"
    own.mkdir()
    cert, key = own / "device.crt", own / "device.key"
    shutil.copy(alice.cert, cert)
    shutil.copy(alice.key, key)
    with gateway(fleet.rt, fleet.mqtt_port) as gw, \
            DeviceClient.from_files(fleet.dash.cert, fleet.dash.key, fleet.dash.ca,
                                    "127.0.0.1", fleet.mqtt_port, timeout=5.0) as dash:
        device = CoapClient.from_files(cert, key, alice.ca, *gw.address, timeout=5.0)
        device.connect()
        try:
            device.publish("devices/alice/temp", b"1")
            device.observe("commands/alice/led")
            old_serial = device.serial
            # The renewal: a new key and certificate for the same device, written over the
            # files; then the old certificate is revoked (as a superseded one is).
            renewed = enroll(fleet.rt, "alice", tmp_path / "renewed")
            shutil.copy(renewed.cert, cert)
            shutil.copy(renewed.key, key)
            device.reload()
            assert device.serial == renewed.serial != old_serial
            revoke(fleet.rt, old_serial, RevocationReason.superseded)
            device.publish("devices/alice/temp", b"2")  # the new session, the new pair
            # The old pair is refused now: the publish above was the new one's.
            stale = client(gw.address, alice)
            with pytest.raises(CoapClientError):
                stale.connect()
                stale.publish("devices/alice/temp", b"old")
            stale.close()
            # The observation was made again on the new session.
            note = None
            for _ in range(20):
                dash.publish("commands/alice/led", b"on")
                note = device.notification(0.25)
                if note is not None and note.code == Code.CONTENT and note.payload == b"on":
                    break
            assert note is not None and note.payload == b"on"
        finally:
            device.close()


def test_a_bad_pair_or_another_device_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    alice, bob = fleet.alice, fleet.bob
    own = tmp_path / "device"
    own.mkdir()
    cert, key = own / "device.crt", own / "device.key"
    shutil.copy(alice.cert, cert)
    shutil.copy(alice.key, key)
    with gateway(fleet.rt, fleet.mqtt_port) as gw:
        device = CoapClient.from_files(cert, key, alice.ca, *gw.address, timeout=5.0)
        device.connect()
        try:
            serial = device.serial
            shutil.copy(bob.cert, cert)
            shutil.copy(bob.key, key)
            with pytest.raises(InvalidInputError, match="another device"):
                device.reload()
            shutil.copy(alice.cert, cert)  # alice's certificate with bob's key
            with pytest.raises(InvalidInputError, match="cannot load"):
                device.reload()
            cert.write_text("not a certificate")
            with pytest.raises(InvalidInputError, match="not a PEM certificate"):
                device.reload()
            assert device.serial == serial and device.connected
            device.publish("devices/alice/temp", b"still here")
        finally:
            device.close()
        with pytest.raises(CoapClientError):
            device.publish("devices/alice/temp", b"closed")
