"""DTLS session resumption on the gateway's listener: OpenSSL's own client resumes the
session it saved (an abbreviated handshake, "Reused"), and the standing of the
certificate the session was made with is checked again on resumption, so a session of a
certificate revoked since is refused. The device SDK resumes too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iotsec.app.events import list_events
from iotsec.app.pki.revocation import revoke
from iotsec.coap.message import Code
from iotsec.errors import CoapClientError
from tests.broker.support import Creds
from tests.coap.conftest import Fleet
from tests.coap.support import client, gateway
from tests.services import require_tool


def _s_client(address: tuple[str, int], creds: Creds, session: Path, *, save: bool
              ) -> str:
    openssl = require_tool("openssl", "Debian package 'openssl'")
    args = [openssl, "s_client", "-dtls1_2", "-connect", f"{address[0]}:{address[1]}",
            "-cert", str(creds.cert), "-key", str(creds.key), "-CAfile", str(creds.ca),
            "-verify_return_error", "-sess_out" if save else "-sess_in", str(session)]
    done = subprocess.run(args, input="", capture_output=True, text=True, timeout=20,
                          check=False)
    return done.stdout + done.stderr


def test_openssl_resumes_a_session_and_revocation_still_applies(fleet: Fleet,
                                                                 tmp_path: Path) -> None:
    session = tmp_path / "session.pem"
    with gateway(fleet.rt, fleet.mqtt_port) as gw:
        first = _s_client(gw.address, fleet.alice, session, save=True)
        assert "New, " in first and "Verify return code: 0 (ok)" in first, first
        again = _s_client(gw.address, fleet.alice, session, save=False)
        assert "Reused, " in again, again
        # The certificate revoked: the resumed session's certificate is checked at the end
        # of the abbreviated handshake as after a full one, and the session refused.
        revoke(fleet.rt, fleet.alice.serial)
        _s_client(gw.address, fleet.alice, session, save=False)
    refused = [e for e in list_events(fleet.rt.engine, kind="coap.connect")
               if e.outcome == "denied"]
    assert [(e.actor, "revoked" in str(e.detail)) for e in refused] == [("alice", True)], \
        refused


def test_the_sdk_resumes_its_session(fleet: Fleet) -> None:
    with gateway(fleet.rt, fleet.mqtt_port) as gw, client(gw.address, fleet.bob) as device:
        assert not device.resumed
        device.publish("devices/bob/t", b"1")
        device.reconnect()
        assert device.resumed
        answer = device.request(Code.PUT, "ps/devices/bob/t", b"2")
        assert answer is not None and answer.code == Code.CHANGED
        # Revoked: the resumed session is refused at its end, as a full handshake is.
        revoke(fleet.rt, fleet.bob.serial)
        with pytest.raises(CoapClientError):
            device.reconnect()
            device.publish("devices/bob/t", b"3")
