"""CSR keys: an RSA key with a public exponent other than 65537 is refused, and a key
that another identity's valid certificate already certifies is refused (one key, two
identities) unless the operator explicitly allows it, which is then a security event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from iotsec.app.events import list_events
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki import cert_records, issuance, revocation
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, WeakKeyError
from iotsec.pki.csr import parse_csr
from tests.conftest import FakeClock
from tests.helpers import make_csr, make_key


def test_an_rsa_exponent_of_3_is_refused(rt: Runtime) -> None:
    key = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(WeakKeyError) as refused:
        parse_csr(make_csr(key))
    assert "exponent is 3" in str(refused.value) and "65537" in str(refused.value)
    add_device(rt, NewDevice.parse("rsa-dev"))
    with pytest.raises(WeakKeyError):
        issuance.issue_from_csr(rt, "rsa-dev", make_csr(key))
    assert cert_records.list_certificates(rt, device_id="rsa-dev") == []
    assert parse_csr(make_csr(make_key("rsa2048"))).public_key.public_numbers().e == 65537


def _devices(rt: Runtime, *names: str) -> None:
    for name in names:
        add_device(rt, NewDevice.parse(name))


def test_one_key_cannot_hold_two_identities(rt: Runtime, clock: FakeClock) -> None:
    _devices(rt, "dev-a", "dev-b", "dev-c")
    key = make_key()
    first = issuance.issue_from_csr(rt, "dev-a", make_csr(key), days=30)
    again = issuance.issue_from_csr(rt, "dev-a", make_csr(key))  # the same identity: fine
    with pytest.raises(ConflictError) as refused:
        issuance.issue_from_csr(rt, "dev-b", make_csr(key))
    assert first.serial in str(refused.value) or again.serial in str(refused.value)
    assert "--allow-shared-key" in (refused.value.hint or "")
    assert cert_records.list_certificates(rt, device_id="dev-b") == []
    # A batch is refused whole, also when two of its own requests share a key.
    other = make_key()
    with pytest.raises(ConflictError):
        issuance.issue_batch(rt, [("dev-b", make_csr(other)), ("dev-c", make_csr(other))])
    assert cert_records.list_certificates(rt, device_id="dev-b") == []
    # Renewing onto another identity's key is refused as well.
    own = issuance.issue_from_csr(rt, "dev-c", make_csr())
    with pytest.raises(ConflictError):
        issuance.renew(rt, own.serial, make_csr(key))
    # Explicitly allowed: issued, and recorded.
    shared = issuance.issue_from_csr(rt, "dev-b", make_csr(key), allow_shared_key=True)
    rt.events.flush()
    (event,) = list_events(rt.engine, kind="cert.shared-key")
    assert event.subject == shared.serial and event.actor == "dev-b"
    detail = dict(event.detail or {})
    assert detail["allow_shared_key"] is True
    assert {h["serial"] for h in detail["shared_with"]} == {first.serial, again.serial}
    # Once no other identity holds the key validly (revoked or expired), it is free again.
    revocation.revoke(rt, shared.serial)
    revocation.revoke(rt, again.serial)
    clock.advance(timedelta(days=31))  # 'first' has expired
    assert issuance.issue_from_csr(rt, "dev-c", make_csr(key)).device_id == "dev-c"


def test_the_api_refuses_a_shared_key_unless_allowed(api: TestClient, rt: Runtime) -> None:
    _devices(rt, "api-a", "api-b")
    csr = make_csr(make_key()).decode("ascii")
    assert api.post("/v1/devices/api-a/certificates", json={"csr": csr}).status_code == 201
    refused = api.post("/v1/devices/api-b/certificates", json={"csr": csr})
    assert refused.status_code == 409, refused.text
    assert "two identities" in refused.json()["detail"]
    allowed = api.post("/v1/devices/api-b/certificates",
                       json={"csr": csr, "allow_shared_key": True})
    assert allowed.status_code == 201, allowed.text
    rt.events.flush()
    assert [e.subject for e in list_events(rt.engine, kind="cert.shared-key")] == [
        allowed.json()["serial"]]
