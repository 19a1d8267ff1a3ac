"""Enrolment with a bootstrap secret (simpleenroll at the service level), on SQLite and
PostgreSQL: device-bound and template secrets, devices created just in time, approval,
and the attacks the design names (a used, expired, revoked or wrong secret; a secret of
device A used as B; a template enrolment taking an existing device; a key another device
holds; a race for a single use; a source that keeps failing)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotsec.access.policy import Role, parse_rule_spec
from iotsec.app.access.decisions import check, identity_for
from iotsec.app.access.roles import add_role
from iotsec.app.broker.fleet import load_fleet
from iotsec.app.enrol import est, secrets, templates
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.cert_records import list_certificates
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    InvalidInputError,
    MalformedInputError,
    NotFoundError,
    ThrottledError,
)
from iotsec.identity.registry import DeviceState
from iotsec.pki.der import oid as der_oid
from iotsec.pki.est import read_certs_only
from iotsec.pki.serial import format_serial
from tests.conftest import FakeClock
from tests.enrol.services_support import add_template, common_name, csr, dump, events, refusals
from tests.helpers import make_key

SOURCE = "192.0.2.10"


def _secret(rt: Runtime, *, device: str | None = None, template: str | None = None,
            uses: int = 1, minutes: int = 60) -> est.BasicCredential:
    info, secret = secrets.create_secret(rt, device_id=device, template=template, uses=uses,
                                         expires_in=timedelta(minutes=minutes))
    return est.BasicCredential(info.id, secret)


def _enrol(rt: Runtime, credential: est.Credential, request: bytes, *,
           label: str | None = None, source: str = SOURCE) -> est.Issued | est.Pending:
    return est.enrol(rt, credential, request, label=label, source=source)


def _issued(rt: Runtime, outcome: est.Issued | est.Pending) -> x509.Certificate:
    """The certificate an enrolment issued, checked: the PKCS#7 carries exactly the
    recorded certificate, signed by the issuing CA."""
    assert isinstance(outcome, est.Issued), outcome
    (cert,) = read_certs_only(outcome.chain_der)
    assert cert == x509.load_der_x509_certificate(outcome.record.der)
    cert.verify_directly_issued_by(rt.authority("issuing").certificate)
    return cert


def _race(rt: Runtime, attempts: list[tuple[est.BasicCredential, bytes, str]]
          ) -> list[object]:
    """Run the enrolments at once, one thread each; their outcomes (an error is one)."""
    outcomes: list[object] = []
    start = threading.Barrier(len(attempts))

    def attempt(credential: est.BasicCredential, request: bytes, source: str) -> None:
        start.wait()
        try:
            outcomes.append(_enrol(rt, credential, request, source=source))
        except (EnrolmentAuthError, EnrolmentForbiddenError) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=attempt, args=a) for a in attempts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


# --- a device-bound secret --------------------------------------------------------------


def test_a_device_secret_enrols_that_device_whatever_the_csr_says(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    add_device(rt, NewDevice.parse("dev-b"))
    credential = _secret(rt, device="dev-a")
    cert = _issued(rt, _enrol(rt, credential, csr(cn="dev-b")))
    assert common_name(cert) == "dev-a"
    assert [c.device_id for c in list_certificates(rt)] == ["dev-a"]
    assert get_device(rt, "dev-a").state is DeviceState.ACTIVE
    assert get_device(rt, "dev-b").state is DeviceState.PENDING
    (event,) = events(rt, "est.enrolled")
    assert event.actor == "dev-a" and event.source == SOURCE
    assert event.subject == format_serial(cert.serial_number)
    assert event.detail is not None and event.detail["credential"] == f"secret:{credential.id}"
    assert credential.secret not in repr(event)
    assert credential.secret.encode() not in dump(rt)


def test_a_device_secret_enrols_at_no_label(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    add_template(rt, "sensors")
    credential = _secret(rt, device="dev-a")
    with pytest.raises(EnrolmentForbiddenError, match="label"):
        _enrol(rt, credential, csr(), label="sensors")
    assert secrets.get_secret(rt, credential.id).uses_left == 1


# --- refused credentials ----------------------------------------------------------------


def test_a_used_secret_is_refused(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    credential = _secret(rt, device="dev-a")
    _issued(rt, _enrol(rt, credential, csr()))
    with pytest.raises(EnrolmentAuthError) as info:
        _enrol(rt, credential, csr())
    assert str(info.value) == "the enrolment credential is not valid"
    assert info.value.status == 401
    assert refusals(rt) == ["used enrolment secret"]
    assert len(list_certificates(rt)) == 1


def test_an_expired_secret_is_refused(rt: Runtime, clock: FakeClock) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    credential = _secret(rt, device="dev-a", minutes=5)
    clock.advance(timedelta(minutes=5))
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, credential, csr())
    assert refusals(rt) == ["expired enrolment secret"]
    assert list_certificates(rt) == []


def test_a_revoked_secret_is_refused(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    credential = _secret(rt, device="dev-a")
    secrets.revoke_secret(rt, credential.id)
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, credential, csr())
    assert refusals(rt) == ["revoked enrolment secret"]


def test_wrong_unknown_and_malformed_secrets_look_alike(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    real = _secret(rt, device="dev-a")
    other = _secret(rt, device="dev-a")
    attempts = [est.BasicCredential(real.id, other.secret),
                est.BasicCredential("es_aaaaaaaaaaaaaaaa", real.secret),
                est.BasicCredential("es_x", "short"),
                est.BasicCredential(real.id, real.secret + "x"),
                est.BasicCredential("", "")]
    messages = set()
    for credential in attempts:
        with pytest.raises(EnrolmentAuthError) as info:
            _enrol(rt, credential, csr(), source=f"198.51.100.{len(messages) + 1}")
        messages.add((str(info.value), info.value.hint))
    assert len(messages) == 1  # nothing tells whether a secret id exists
    assert secrets.get_secret(rt, real.id).uses_left == 1
    assert list_certificates(rt) == []


def test_a_bad_csr_is_invalid_input_and_spends_nothing(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    credential = _secret(rt, device="dev-a")
    with pytest.raises(MalformedInputError):
        _enrol(rt, credential, b"\x30\x03garbage")
    assert secrets.get_secret(rt, credential.id).uses_left == 1
    _issued(rt, _enrol(rt, credential, csr()))


def test_a_key_another_device_holds_is_refused_and_spends_nothing(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    add_device(rt, NewDevice.parse("victim"))
    stolen = make_key()
    issue_from_csr(rt, "victim", csr(stolen))
    credential = _secret(rt, device="dev-a")
    with pytest.raises(EnrolmentForbiddenError) as info:
        _enrol(rt, credential, csr(stolen))
    assert "victim" not in str(info.value) and "victim" not in info.value.hint
    assert "victim" in refusals(rt)[0]  # the operator learns whose key it was
    assert secrets.get_secret(rt, credential.id).uses_left == 1
    assert get_device(rt, "dev-a").state is DeviceState.PENDING


def test_a_template_enrolment_refused_for_its_key_registers_nothing(rt: Runtime) -> None:
    """The device a template registers is written active, in the unit of work that issues
    its certificate: a refusal after its registration undoes it whole."""
    add_device(rt, NewDevice.parse("victim"))
    stolen = make_key()
    issue_from_csr(rt, "victim", csr(stolen))
    add_template(rt, "sensors")
    credential = _secret(rt, template="sensors")
    with pytest.raises(EnrolmentForbiddenError):
        _enrol(rt, credential, csr(stolen, cn="newcomer"))
    with pytest.raises(NotFoundError):
        get_device(rt, "newcomer")
    assert secrets.get_secret(rt, credential.id).uses_left == 1
    assert [c.device_id for c in list_certificates(rt)] == ["victim"]
    _issued(rt, _enrol(rt, credential, csr(cn="newcomer")))
    assert get_device(rt, "newcomer").state is DeviceState.ACTIVE


def test_a_disabled_device_does_not_enrol(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    credential = _secret(rt, device="dev-a")
    change_state(rt, "dev-a", DeviceState.DISABLED)
    with pytest.raises(EnrolmentForbiddenError, match="may not hold"):
        _enrol(rt, credential, csr())
    assert secrets.get_secret(rt, credential.id).uses_left == 1


def test_a_single_use_secret_enrols_once_under_a_race(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    credential = _secret(rt, device="dev-a")
    outcomes = _race(rt, [(credential, csr(), f"203.0.113.{n}") for n in range(4)])
    assert sum(isinstance(o, est.Issued) for o in outcomes) == 1
    assert sum(isinstance(o, EnrolmentAuthError) for o in outcomes) == 3
    assert len(list_certificates(rt)) == 1


def test_failures_from_one_source_are_throttled(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    bad = est.BasicCredential("es_aaaaaaaaaaaaaaaa", "x" * 43)
    for _ in range(rt.settings.auth_failure_limit):
        with pytest.raises(EnrolmentAuthError):
            _enrol(rt, bad, csr())
    good = _secret(rt, device="dev-a")
    with pytest.raises(ThrottledError) as info:
        _enrol(rt, good, csr())  # even a good credential, from that source
    assert info.value.status == 429 and info.value.retry_after > 0
    assert secrets.get_secret(rt, good.id).uses_left == 1
    _issued(rt, _enrol(rt, good, csr(), source="192.0.2.99"))  # other sources are not


# --- template secrets: devices created just in time ------------------------------------


def test_a_template_creates_the_device_with_its_groups_roles_and_attributes(
        rt: Runtime) -> None:
    add_role(rt, Role.build("sensor", [parse_rule_spec("allow", "publish:t/${device.id}")]))
    add_template(rt, "sensors", groups=["floor-2"], roles=["sensor"], attributes=["site=x"])
    credential = _secret(rt, template="sensors", uses=2)
    cert = _issued(rt, _enrol(rt, credential, csr(cn="th-0001")))
    assert common_name(cert) == "th-0001"
    device = get_device(rt, "th-0001")
    assert device.state is DeviceState.ACTIVE
    assert device.groups == ("floor-2",)
    assert dict(device.attributes) == {"site": "x"}
    assert check(rt, "th-0001", "publish", "t/th-0001").allowed
    assert not check(rt, "th-0001", "publish", "t/other").allowed
    event = events(rt, "est.enrolled")[-1]
    assert event.detail is not None and event.detail["template"] == "sensors"
    _issued(rt, _enrol(rt, credential, csr(cn="th-0002"), label="sensors"))
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, credential, csr(cn="th-0003"))
    assert secrets.get_secret(rt, credential.id).state is secrets.SecretState.USED


def test_a_template_without_roles_gives_the_default_role(rt: Runtime) -> None:
    add_template(rt, "plain")
    _issued(rt, _enrol(rt, _secret(rt, template="plain"), csr(cn="p-1")))
    identity, _ = identity_for(rt, "p-1")
    assert identity.device_id == "p-1"
    _, fleet = load_fleet(rt)
    assert next(d for d in fleet if d.id == "p-1").roles == ("device",)


def test_id_from_serial_number_and_from_secret(rt: Runtime) -> None:
    add_template(rt, "by-serial", id_from="serial-number")
    add_template(rt, "by-secret", id_from="secret")
    cert = _issued(rt, _enrol(rt, _secret(rt, template="by-serial"), csr(cn="x", serial="SN-9")))
    assert common_name(cert) == "SN-9"
    credential = _secret(rt, template="by-secret")
    assert common_name(_issued(rt, _enrol(rt, credential, csr(cn="chosen")))) == credential.id
    with pytest.raises(InvalidInputError, match="no subject serialNumber"):
        _enrol(rt, _secret(rt, template="by-serial"), csr(cn="only-cn"))


def test_a_server_profileadd_template(rt: Runtime) -> None:
    add_template(rt, "gateways", profile="server")
    cert = _issued(rt, _enrol(rt, _secret(rt, template="gateways"), csr(cn="gw-1")))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list_certificates(rt)[0].profile == "server"


def test_a_template_enrolment_never_takes_an_existing_device(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    add_template(rt, "sensors")
    credential = _secret(rt, template="sensors")
    with pytest.raises(EnrolmentForbiddenError, match="already registered") as info:
        _enrol(rt, credential, csr(cn="dev-a"))
    assert info.value.status == 403
    assert secrets.get_secret(rt, credential.id).uses_left == 1
    assert list_certificates(rt) == []
    assert get_device(rt, "dev-a").state is DeviceState.PENDING  # left as it was


def test_a_template_secret_enrols_only_under_its_label(rt: Runtime) -> None:
    add_template(rt, "sensors")
    add_template(rt, "cameras")
    credential = _secret(rt, template="sensors")
    with pytest.raises(EnrolmentForbiddenError, match="label"):
        _enrol(rt, credential, csr(cn="s-1"), label="cameras")
    with pytest.raises(InvalidInputError):
        _enrol(rt, credential, csr(cn="s-1"), label="bad label")
    _issued(rt, _enrol(rt, credential, csr(cn="s-1"), label="sensors"))


# --- approval ---------------------------------------------------------------------------


def test_an_approved_device_collects_its_certificate_once(rt: Runtime, clock: FakeClock) -> None:
    add_template(rt, "sensors", require_approval=True)
    credential = _secret(rt, template="sensors", minutes=10)
    key = make_key()
    first = _enrol(rt, credential, csr(key, cn="s-1"))
    assert first == est.Pending(device_id="s-1", retry_after=rt.settings.est_retry_after)
    assert get_device(rt, "s-1").state is DeviceState.AWAITING_APPROVAL
    assert _enrol(rt, credential, csr(key, cn="s-1")) == first  # polls, still waiting
    with pytest.raises(EnrolmentForbiddenError, match="key waiting"):
        _enrol(rt, credential, csr(make_key(), cn="s-1"))
    assert list_certificates(rt) == []
    clock.advance(timedelta(minutes=30))  # the secret expires; the approval still counts
    approved = est.approve(rt, "s-1")
    assert approved.state is DeviceState.PENDING
    cert = _issued(rt, _enrol(rt, credential, csr(key, cn="s-1")))
    assert common_name(cert) == "s-1"
    assert get_device(rt, "s-1").state is DeviceState.ACTIVE
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, credential, csr(key, cn="s-1"))  # once only
    assert [e.kind for e in events(rt, "est.pending")] == ["est.pending"] * 2
    (approval,) = events(rt, "est.approved")
    assert approval.subject == "s-1"
    assert approval.detail is not None
    assert approval.detail["credential"] == f"secret:{credential.id}"
    assert approval.detail["requested_from"] == SOURCE


def test_a_used_secret_does_not_poll_for_another_device(rt: Runtime) -> None:
    add_template(rt, "sensors", require_approval=True)
    credential = _secret(rt, template="sensors")
    assert isinstance(_enrol(rt, credential, csr(cn="s-1")), est.Pending)
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, credential, csr(cn="s-2"))
    with pytest.raises(NotFoundError):
        get_device(rt, "s-2")


def test_a_device_refused_while_waiting_never_gets_a_certificate(rt: Runtime) -> None:
    add_template(rt, "sensors", require_approval=True)
    credential = _secret(rt, template="sensors")
    key = make_key()
    _enrol(rt, credential, csr(key, cn="s-1"))
    change_state(rt, "s-1", DeviceState.RETIRED)
    with pytest.raises(EnrolmentForbiddenError):
        _enrol(rt, credential, csr(key, cn="s-1"))
    assert list_certificates(rt) == []


def test_a_revoked_secret_stops_a_waiting_enrolment(rt: Runtime) -> None:
    add_template(rt, "sensors", require_approval=True)
    credential = _secret(rt, template="sensors")
    key = make_key()
    _enrol(rt, credential, csr(key, cn="s-1"))
    est.approve(rt, "s-1")
    secrets.revoke_secret(rt, credential.id)
    with pytest.raises(EnrolmentAuthError):
        _enrol(rt, credential, csr(key, cn="s-1"))
    assert list_certificates(rt) == []


def test_only_a_waiting_device_is_approved(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-a"))
    with pytest.raises(DeviceStateError, match="not awaiting approval"):
        est.approve(rt, "dev-a")
    with pytest.raises(NotFoundError):
        est.approve(rt, "nobody")
    assert events(rt, "est.approved") == []


def test_a_waiting_template_cannot_be_removed(rt: Runtime) -> None:
    add_template(rt, "sensors", require_approval=True)
    credential = _secret(rt, template="sensors")
    _enrol(rt, credential, csr(cn="s-1"))
    secrets.revoke_secret(rt, credential.id)
    with pytest.raises(ConflictError, match="waiting for approval"):
        templates.remove_template(rt, "sensors")


# --- cacerts and csrattrs ---------------------------------------------------------------


def test_cacerts_is_the_issuing_chain(rt: Runtime) -> None:
    add_template(rt, "sensors")
    certs = read_certs_only(est.cacerts(rt, None))
    assert sorted(c.subject.rfc4514_string() for c in certs) == sorted(
        rt.authority(role).certificate.subject.rfc4514_string() for role in ("issuing", "root"))
    assert est.cacerts(rt, "sensors") == est.cacerts(rt, None)
    with pytest.raises(NotFoundError):
        est.cacerts(rt, "nope")


def test_csrattrs_name_what_the_template_reads(rt: Runtime) -> None:
    add_template(rt, "by-cn")
    add_template(rt, "by-serial", id_from="serial-number")
    cn, serial = NameOID.COMMON_NAME.dotted_string, NameOID.SERIAL_NUMBER.dotted_string

    def oids(label: str | None) -> bytes:
        return est.csrattrs(rt, label)

    assert der_oid(cn) in oids("by-cn") and der_oid(serial) not in oids("by-cn")
    assert der_oid(serial) in oids("by-serial") and der_oid(cn) not in oids("by-serial")
    assert der_oid(cn) not in oids(None)
    assert der_oid("1.2.840.10045.3.1.7") in oids(None)  # the issuing CA's curve, P-256
    with pytest.raises(NotFoundError):
        est.csrattrs(rt, "nope")


def test_two_template_enrolments_racing_for_one_device_id(rt: Runtime) -> None:
    add_template(rt, "sensors")
    outcomes = _race(rt, [(_secret(rt, template="sensors"), csr(cn="contested"), SOURCE)
                          for _ in range(4)])
    assert sum(isinstance(o, est.Issued) for o in outcomes) == 1
    assert sum(isinstance(o, EnrolmentForbiddenError) for o in outcomes) == 3
    assert [c.device_id for c in list_certificates(rt)] == ["contested"]


def test_an_enrolment_keeps_the_decisions_this_process_has_cached(rt: Runtime) -> None:
    # A device registered just in time is in none of the process's caches (an unknown
    # device is never cached), so an enrolment leaves what the decisions read alone: an
    # enrolment storm must not make every decision of the same server read the store.
    from iotsec.app.access import decisions

    rt.settings.hot_cache_seconds = 60
    add_device(rt, NewDevice.parse("known"))
    assert check(rt, "known", "publish", "devices/known/t").allowed
    assert decisions.check_cached(rt, "known", "publish", "devices/known/t") is not None
    add_template(rt, "sensors", groups=["fleet"], id_from="csr-cn")
    for name in ("fresh-1", "fresh-2"):
        # Unknown until it enrols (and not cached as such), decided at once after.
        with pytest.raises(NotFoundError):
            check(rt, name, "publish", f"devices/{name}/t")
        outcome = _enrol(rt, _secret(rt, template="sensors"), csr(cn=name))
        assert isinstance(outcome, est.Issued)
        assert check(rt, name, "publish", f"devices/{name}/t").allowed
    assert decisions.check_cached(rt, "known", "publish", "devices/known/t") is not None
