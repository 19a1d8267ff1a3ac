"""Provisioning by claim at the service level, on SQLite and PostgreSQL: a manufacturer's
certificate enrols once under its CA's template; refused when used before, from a CA that
is not (or no longer) registered, forged, expired, off the allow list, or when the
pre-provisioning hook refuses, fails or stays silent (a real HTTP server on loopback)."""

from __future__ import annotations

import hashlib
import socket
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from iotsec.app.enrol import claims, est, templates
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.pki.cert_records import list_certificates
from iotsec.app.runtime import Runtime
from iotsec.errors import EnrolmentAuthError, EnrolmentForbiddenError
from iotsec.identity.enrolment import Template
from iotsec.identity.registry import DeviceState
from iotsec.pki.serial import format_serial
from tests.conftest import FakeClock
from tests.enrol.services_support import (
    Factory,
    Hook,
    common_name,
    csr,
    events,
    factory,
    hook_server,
    refusals,
)
from tests.helpers import make_key

SOURCE = "198.51.100.7"


@pytest.fixture
def acme(rt: Runtime, clock: FakeClock) -> Factory:
    """Claim CA 'acme' under template 'sensors' (device id from the serialNumber)."""
    templates.add_template(rt, Template.parse("sensors", groups=["field"],
                                              id_from="serial-number"))
    made = factory(clock())
    claims.add_claim_ca(rt, "acme", made.pem, "sensors")
    return made


def _enrol(rt: Runtime, chain: est.ClientChain, *, cn: str = "x", label: str | None = None,
           request: bytes | None = None) -> est.Issued | est.Pending:
    return est.enrol(rt, chain, request or csr(cn=cn), label=label, source=SOURCE)


def _cn(outcome: est.Issued | est.Pending) -> str:
    assert isinstance(outcome, est.Issued), outcome
    return common_name(outcome.record.der)


def test_a_claim_enrols_the_device_its_manufacturer_named(rt: Runtime, acme: Factory) -> None:
    claim = acme.claim(hardware_id="HW-0001")
    assert _cn(_enrol(rt, claim, request=csr(cn="chosen", serial="forged"))) == "HW-0001"
    device = get_device(rt, "HW-0001")
    assert device.state is DeviceState.ACTIVE and device.groups == ("field",)
    (event,) = events(rt, "est.enrolled")
    assert event.actor == "HW-0001" and event.source == SOURCE
    serial = format_serial(claim.leaf.serial_number)
    assert event.detail is not None and event.detail["credential"] == f"claim:acme:{serial}"


def test_a_claim_certificate_enrols_once(rt: Runtime, acme: Factory) -> None:
    claim = acme.claim(hardware_id="HW-0001")
    _cn(_enrol(rt, claim))
    with pytest.raises(EnrolmentForbiddenError, match="already enrolled") as info:
        _enrol(rt, claim)
    assert info.value.status == 403
    # Not even once its CA is removed and registered again.
    claims.remove_claim_ca(rt, "acme")
    claims.add_claim_ca(rt, "acme-2", acme.pem, "sensors")
    with pytest.raises(EnrolmentForbiddenError, match="already enrolled"):
        _enrol(rt, claim)
    assert len(list_certificates(rt)) == 1


def test_a_claim_from_an_unregistered_or_removed_ca_is_refused(
        rt: Runtime, acme: Factory, clock: FakeClock) -> None:
    stranger = factory(clock(), name="Acme CA")  # same name, another key
    with pytest.raises(EnrolmentAuthError) as info:
        _enrol(rt, stranger.claim(hardware_id="HW-1"))
    assert info.value.status == 401
    assert "does not chain to a registered claim CA" in refusals(rt)[-1]
    claim = acme.claim(hardware_id="HW-2")
    claims.remove_claim_ca(rt, "acme")
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, claim)
    assert list_certificates(rt) == []


def test_a_forged_claim_with_the_right_issuer_name_is_refused(
        rt: Runtime, acme: Factory, clock: FakeClock) -> None:
    forger = Factory(key=make_key(), cert=acme.cert, now=clock())  # the CA's name, not its key
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, forger.claim(hardware_id="HW-1"))


@pytest.mark.parametrize("shift", [timedelta(days=-10), timedelta(days=10)])
def test_a_claim_outside_its_validity_is_refused(rt: Runtime, acme: Factory,
                                                 clock: FakeClock, shift: timedelta) -> None:
    now = clock()
    claim = acme.claim(hardware_id="HW-1", not_before=now - timedelta(days=5),
                       not_after=now + timedelta(days=5))
    clock.advance(shift)
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, claim)
    assert "not valid" in refusals(rt)[-1]


def test_an_intermediate_between_the_claim_and_its_ca(rt: Runtime, acme: Factory,
                                                      clock: FakeClock) -> None:
    now = clock()
    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme line 3")])
    intermediate = (x509.CertificateBuilder().subject_name(name).issuer_name(acme.cert.subject)
                    .public_key(key.public_key()).serial_number(77)
                    .not_valid_before(now - timedelta(days=1))
                    .not_valid_after(now + timedelta(days=365))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .sign(acme.key, hashes.SHA256()))
    line = Factory(key=key, cert=intermediate, now=now)
    leaf = line.claim(hardware_id="HW-9").leaf
    assert _cn(_enrol(rt, est.ClientChain((leaf, intermediate)))) == "HW-9"
    with pytest.raises(EnrolmentAuthError):  # the leaf alone does not reach the CA
        _enrol(rt, est.ClientChain((line.claim(hardware_id="HW-10").leaf,)))


def test_a_ca_certificate_is_not_a_claim(rt: Runtime, acme: Factory) -> None:
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, est.ClientChain((acme.cert,)))


def test_the_allow_list_decides(rt: Runtime, clock: FakeClock) -> None:
    templates.add_template(rt, Template.parse("sensors", id_from="serial-number"))
    made = factory(clock())
    claims.add_claim_ca(rt, "acme", made.pem, "sensors",
                        allow=frozenset({"HW-OK", format(5000, "x")}))
    assert _cn(_enrol(rt, made.claim(hardware_id="HW-OK"))) == "HW-OK"
    assert _cn(_enrol(rt, made.claim(hardware_id="HW-BY-SERIAL", serial=5000))) == (
        "HW-BY-SERIAL")
    off_list = made.claim(hardware_id="HW-NO")
    with pytest.raises(EnrolmentForbiddenError, match="allow list"):
        _enrol(rt, off_list)
    with pytest.raises(EnrolmentForbiddenError, match="allow list"):
        _enrol(rt, off_list)  # refused again: a refusal does not use the claim up
    assert len(list_certificates(rt)) == 2


def _with_hook(rt: Runtime, made: Factory, url: str) -> None:
    templates.add_template(rt, Template.parse("sensors", id_from="serial-number"))
    claims.add_claim_ca(rt, "acme", made.pem, "sensors", hook_url=url)


def test_the_hook_is_asked_and_may_accept(rt: Runtime, clock: FakeClock) -> None:
    made = factory(clock())
    with hook_server(Hook(status=204)) as hook:
        _with_hook(rt, made, hook.url)
        claim = made.claim(hardware_id="HW-1")
        assert _cn(_enrol(rt, claim)) == "HW-1"
        with pytest.raises(EnrolmentForbiddenError):
            _enrol(rt, claim)  # used: the hook is not asked again
    (asked,) = hook.received
    der = claim.leaf.public_bytes(serialization.Encoding.DER)
    assert asked == {"claim_ca": "acme", "serial": format_serial(claim.leaf.serial_number),
                     "subject": claim.leaf.subject.rfc4514_string(),
                     "fingerprint": hashlib.sha256(der).hexdigest(), "source": SOURCE}


@pytest.mark.parametrize("status", [403, 500, 302])
def test_a_hook_that_refuses_or_fails_refuses(rt: Runtime, clock: FakeClock,
                                              status: int) -> None:
    made = factory(clock())
    with hook_server(Hook(status=status)) as hook:
        _with_hook(rt, made, hook.url)
        with pytest.raises(EnrolmentForbiddenError, match="hook"):
            _enrol(rt, made.claim(hardware_id="HW-1"))
    assert len(hook.received) == 1
    assert list_certificates(rt) == []


def test_an_unreachable_hook_refuses(rt: Runtime, clock: FakeClock) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    made = factory(clock())
    _with_hook(rt, made, f"http://127.0.0.1:{port}/hook")
    with pytest.raises(EnrolmentForbiddenError, match="did not answer"):
        _enrol(rt, made.claim(hardware_id="HW-1"))


def test_a_silent_hook_refuses(rt: Runtime, clock: FakeClock,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "HOOK_TIMEOUT", 0.3)
    made = factory(clock())
    with hook_server(Hook(status=200, delay=5)) as hook:
        _with_hook(rt, made, hook.url)
        with pytest.raises(EnrolmentForbiddenError, match="did not answer"):
            _enrol(rt, made.claim(hardware_id="HW-1"))
    assert list_certificates(rt) == []


def test_a_claim_does_not_take_an_existing_device_nor_enrol_under_another_label(
        rt: Runtime, acme: Factory) -> None:
    add_device(rt, NewDevice.parse("HW-1"))
    with pytest.raises(EnrolmentForbiddenError, match="already registered"):
        _enrol(rt, acme.claim(hardware_id="HW-1"))
    templates.add_template(rt, Template.parse("cameras"))
    claim = acme.claim(hardware_id="HW-2")
    with pytest.raises(EnrolmentForbiddenError, match="label"):
        _enrol(rt, claim, label="cameras")
    assert _cn(_enrol(rt, claim, label="sensors")) == "HW-2"


def test_a_claim_waits_for_approval_then_collects(rt: Runtime, clock: FakeClock) -> None:
    templates.add_template(rt, Template.parse("gated", id_from="csr-cn",
                                              require_approval=True))
    made = factory(clock())
    claims.add_claim_ca(rt, "acme", made.pem, "gated")
    claim = made.claim()
    request = csr(make_key(), cn="cam-7")
    assert _enrol(rt, claim, request=request) == est.Pending("cam-7", 60)
    assert _enrol(rt, claim, request=request) == est.Pending("cam-7", 60)
    est.approve(rt, "cam-7")
    assert _cn(_enrol(rt, claim, request=request)) == "cam-7"
    with pytest.raises(EnrolmentForbiddenError, match="already enrolled"):
        _enrol(rt, claim, request=request)
