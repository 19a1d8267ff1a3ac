"""EDHOC with the device's credential named by its kid (ID_CRED_I ``{4: kid}``): the
gateway finds the certificate whose key has that kid and builds the same CCS. aiocoap
(``by-key-id``) as the device; a kid of no valid certificate refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiocoap
import aiocoap.oscore
import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.app.coap.oscore_contexts import edhoc_credential
from iotsec.app.events import list_events
from iotsec.app.pki.revocation import revoke
from iotsec.coap.edhoc import CcsCredential, KidReference, credential_kid, parse_id_cred
from iotsec.errors import OscoreError
from tests.broker.support import Creds, Inbox, wait_for
from tests.coap.conftest import Fleet
from tests.coap.support import edhoc_client_credentials, edhoc_posts, gateway
from tests.coap.test_oscore_gateway import _mqtt

_MAIN = "import sys; from iotsec.cli.main import main; sys.exit(main())"


def _by_kid(device: Creds, gateway_credential: bytes, kid: bytes | None = None) -> object:
    return edhoc_client_credentials(device, gateway_credential, kid=kid, by_key_id=True)


def test_id_cred_by_kid_is_parsed_strictly() -> None:
    assert parse_id_cred(cbor2.dumps({4: b"12345678"})) == KidReference(b"12345678")
    for bad in ({4: b"1"}, {4: 7}, {4: b"12345678", 5: 1}, {1: b"12345678"}):
        with pytest.raises(OscoreError):
            parse_id_cred(cbor2.dumps(bad))


def test_aiocoap_names_its_certificate_key_by_kid(fleet: Fleet) -> None:
    gateway_credential = edhoc_credential(fleet.rt)
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
            _mqtt(fleet, fleet.alice) as mqtt:
        assert gw.oscore is not None
        mqtt.subscribe("devices/alice/#", inbox)

        def run(creds: object, topic: str) -> str:
            return edhoc_posts(gw.oscore, creds, [topic], b"by kid")[0]

        assert run(_by_kid(fleet.alice, gateway_credential), "devices/alice/k") == "2.04"
        assert wait_for(lambda: len(inbox.messages) == 1, 5)
        # A kid that is no certificate key's: refused (4.01, unprotected).
        with pytest.raises(aiocoap.oscore.NotAProtectedMessage):
            run(_by_kid(fleet.alice, gateway_credential, b"\x01" * 8), "devices/alice/x")
        # Bob's kid with alice's key: the CCS the gateway builds holds bob's key, so
        # message_3 does not verify.
        bob_key = serialization.load_pem_private_key(fleet.bob.key.read_bytes(), None)
        assert isinstance(bob_key, ec.EllipticCurvePrivateKey)
        with pytest.raises(aiocoap.oscore.NotAProtectedMessage):
            run(_by_kid(fleet.alice, gateway_credential, credential_kid(bob_key.public_key())),
                "devices/bob/x")
        # Revoked: the kid no longer names a valid certificate.
        revoke(fleet.rt, fleet.alice.serial)
        with pytest.raises(aiocoap.oscore.NotAProtectedMessage):
            run(_by_kid(fleet.alice, gateway_credential), "devices/alice/y")
    assert [m.topic for m in inbox.messages] == ["devices/alice/k"]
    denied = [str(e.detail) for e in list_events(fleet.rt.engine, kind="coap.request")
              if e.outcome == "denied"]
    assert sum("no valid device certificate has the key of kid" in d for d in denied) == 2
    assert any("does not verify" in d for d in denied), denied


def test_the_command_prints_a_certificate_kid(fleet: Fleet, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(fleet.alice.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    done = subprocess.run([sys.executable, "-c", _MAIN, "coap", "edhoc", "kid",
                           str(fleet.alice.cert), "--json"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"subject": "alice",
                                       "kid": credential_kid(key.public_key()).hex()}
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    refused = subprocess.run([sys.executable, "-c", _MAIN, "coap", "edhoc", "kid", str(bad)],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "not an X.509 certificate" in refused.stderr, refused.stderr


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=64),
    st.dictionaries(st.integers(-30, 30),
                    st.one_of(st.binary(max_size=20), st.integers(), st.text(max_size=8),
                              st.dictionaries(st.integers(-5, 10), st.binary(max_size=40),
                                              max_size=4)),
                    max_size=3).map(cbor2.dumps)))
def test_id_cred_parser_never_fails_otherwise(data: bytes) -> None:
    """Any ID_CRED_I: a CCS, a kid reference, or OscoreError (4.00), nothing else."""
    parsed: object
    try:
        parsed = parse_id_cred(data)
    except OscoreError as exc:
        parsed = exc.coap_code
    assert parsed == 0x80 or isinstance(parsed, KidReference | CcsCredential)
