"""Managing enrolment: secrets (created, listed, revoked; never stored or recorded in
clear), provisioning templates and claim CAs, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from iotsec.access.policy import Role, parse_rule_spec
from iotsec.app.access.roles import add_role
from iotsec.app.enrol import claims, secrets, templates
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    InputTooLargeError,
    InvalidInputError,
    MalformedInputError,
    NotFoundError,
)
from iotsec.identity.enrolment import Template
from iotsec.identity.registry import DeviceState
from tests.conftest import FakeClock
from tests.enrol.services_support import add_template, dump, events, factory

# --- secrets ----------------------------------------------------------------------------


def test_a_secret_is_shown_once_and_stored_only_hashed(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    info, secret = secrets.create_secret(rt, device_id="dev-1", template=None, uses=3,
                                         expires_in=timedelta(hours=2))
    assert info.device_id == "dev-1" and info.template is None
    assert (info.uses_total, info.uses_left) == (3, 3)
    assert info.state is secrets.SecretState.ACTIVE
    assert info.expires_at - info.created_at == timedelta(hours=2)
    assert secret.encode() not in dump(rt)
    listed = secrets.list_secrets(rt)
    assert [s.id for s in listed] == [info.id]
    assert secret not in repr(listed)
    created = events(rt, "est.secret-created")
    assert created[-1].subject == info.id
    assert secret not in repr(created)


def test_secret_state_follows_time_and_revocation(rt: Runtime, clock: FakeClock) -> None:
    add_template(rt)
    info, _ = secrets.create_secret(rt, device_id=None, template="sensors",
                                    expires_in=timedelta(minutes=5))
    clock.advance(timedelta(minutes=5))
    assert secrets.get_secret(rt, info.id).state is secrets.SecretState.EXPIRED
    revoked = secrets.revoke_secret(rt, info.id)
    assert revoked.state is secrets.SecretState.REVOKED
    with pytest.raises(ConflictError, match="already revoked"):
        secrets.revoke_secret(rt, info.id)
    assert events(rt, "est.secret-revoked")[-1].subject == info.id


@pytest.mark.parametrize(("kwargs", "error", "problem"), [
    ({"device_id": None, "template": None}, InvalidInputError, "one device or for one"),
    ({"device_id": "dev-1", "template": "sensors"}, InvalidInputError, "one device or"),
    ({"device_id": "dev-1", "template": None, "uses": 0}, InvalidInputError, "between 1"),
    ({"device_id": "dev-1", "template": None, "uses": 10_001}, InvalidInputError, "10000"),
    ({"device_id": "dev-1", "template": None, "expires_in": timedelta(seconds=59)},
     InvalidInputError, "one minute"),
    ({"device_id": "dev-1", "template": None, "expires_in": timedelta(days=31)},
     InvalidInputError, "30 days"),
    ({"device_id": "nobody", "template": None}, NotFoundError, "not registered"),
    ({"device_id": "bad/id", "template": None}, InvalidInputError, "not allowed"),
    ({"device_id": None, "template": "nope"}, NotFoundError, "no provisioning template"),
    ({"device_id": "gone", "template": None}, DeviceStateError, "retired"),
    ({"device_id": None, "template": "by-secret", "uses": 2}, InvalidInputError,
     "exactly one device"),
])
def test_secret_requests_refused_change_nothing(rt: Runtime, kwargs: dict[str, object],
                                                error: type[Exception], problem: str) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    add_device(rt, NewDevice.parse("gone"))
    change_state(rt, "gone", DeviceState.RETIRED)
    add_template(rt, "sensors")
    add_template(rt, "by-secret", id_from="secret")
    with pytest.raises(error, match=problem):
        secrets.create_secret(rt, **kwargs)  # type: ignore[arg-type]
    assert secrets.list_secrets(rt) == []


def test_secret_limits_are_inclusive(rt: Runtime) -> None:
    add_device(rt, NewDevice.parse("dev-1"))
    for uses, lifetime in ((1, timedelta(minutes=1)), (10_000, timedelta(days=30))):
        info, _ = secrets.create_secret(rt, device_id="dev-1", template=None, uses=uses,
                                        expires_in=lifetime)
        assert info.uses_left == uses


def test_unknown_secret_ids(rt: Runtime) -> None:
    with pytest.raises(NotFoundError):
        secrets.revoke_secret(rt, "es_aaaaaaaaaaaaaaaa")
    with pytest.raises(InvalidInputError):
        secrets.get_secret(rt, "not-an-id")


# --- templates --------------------------------------------------------------------------


def test_templates_round_trip_and_replace(rt: Runtime) -> None:
    add_role(rt, Role.build("sensor", [parse_rule_spec("allow", "publish:sensors/${device.id}")]))
    made = add_template(rt, "sensors", groups=["floor-2"], roles=["sensor"],
                     attributes=["site=berlin"], id_from="serial-number",
                     require_approval=True, profile="device")
    assert templates.get_template(rt, "sensors") == made
    assert made.created_at is not None
    assert [t.name for t in templates.list_templates(rt)] == ["sensors"]
    with pytest.raises(ConflictError, match="already exists"):
        add_template(rt, "sensors")
    replaced = templates.add_template(rt, Template.parse("sensors", roles=["device"]),
                                      replace=True)
    assert replaced.roles == ("device",) and replaced.groups == ()
    assert [e.kind for e in events(rt, "est.template-replaced")] == ["est.template-replaced"]


def test_a_template_names_only_existing_roles(rt: Runtime) -> None:
    with pytest.raises(NotFoundError, match="role 'ghost' does not exist"):
        add_template(rt, "t", roles=["ghost"])
    assert templates.list_templates(rt) == []


def test_a_template_in_use_is_not_removed(rt: Runtime, clock: FakeClock) -> None:
    add_template(rt, "sensors")
    info, _ = secrets.create_secret(rt, device_id=None, template="sensors",
                                    expires_in=timedelta(minutes=10))
    with pytest.raises(ConflictError, match="active enrolment secret"):
        templates.remove_template(rt, "sensors")
    secrets.revoke_secret(rt, info.id)
    ca = factory(clock())
    claims.add_claim_ca(rt, "acme", ca.pem, "sensors")
    with pytest.raises(ConflictError, match="claim CA 'acme'"):
        templates.remove_template(rt, "sensors")
    claims.remove_claim_ca(rt, "acme")
    templates.remove_template(rt, "sensors")  # the revoked secret goes with it
    assert templates.list_templates(rt) == [] and secrets.list_secrets(rt) == []
    with pytest.raises(NotFoundError):
        templates.remove_template(rt, "sensors")


# --- claim CAs --------------------------------------------------------------------------


def test_claim_cas_are_added_listed_and_removed(rt: Runtime, clock: FakeClock) -> None:
    add_template(rt, "sensors")
    before = claims.claim_generation(rt)
    ca = factory(clock())
    added = claims.add_claim_ca(rt, "acme", ca.pem, "sensors",
                                allow=frozenset({"HW-1"}), hook_url="https://hooks.example/x")
    assert added.allow == frozenset({"HW-1"})
    assert added.hook_url == "https://hooks.example/x"
    assert added.pem.encode() == ca.pem
    assert [c.name for c in claims.list_claim_cas(rt)] == ["acme"]
    assert claims.trust_anchors(rt) == [ca.cert]
    during = claims.claim_generation(rt)
    assert during != before
    with pytest.raises(ConflictError, match="already has this name or certificate"):
        claims.add_claim_ca(rt, "acme-again", ca.pem, "sensors")
    claims.remove_claim_ca(rt, "acme")
    assert claims.claim_generation(rt) == before
    with pytest.raises(NotFoundError):
        claims.remove_claim_ca(rt, "acme")
    assert [e.subject for e in events(rt, "est.claim-ca-added")] == ["acme"]


def test_claim_ca_must_be_a_ca(rt: Runtime, clock: FakeClock) -> None:
    add_template(rt, "sensors")
    for not_a_ca in (factory(clock(), ca=False), factory(clock(), cert_sign=False)):
        with pytest.raises(InvalidInputError, match="not a CA certificate"):
            claims.add_claim_ca(rt, "acme", not_a_ca.pem, "sensors")
    with pytest.raises(MalformedInputError):
        claims.add_claim_ca(rt, "acme", b"garbage", "sensors")
    with pytest.raises(InputTooLargeError):
        claims.add_claim_ca(rt, "acme", b"A" * (claims.MAX_CA_PEM + 1), "sensors")
    two = factory(clock()).pem + factory(clock()).pem
    with pytest.raises(InvalidInputError, match="exactly one"):
        claims.add_claim_ca(rt, "acme", two, "sensors")
    with pytest.raises(NotFoundError, match="no provisioning template"):
        claims.add_claim_ca(rt, "acme", factory(clock()).pem, "nope")
    assert claims.list_claim_cas(rt) == []


def test_iotsecs_own_ca_is_not_a_claim_ca(rt: Runtime) -> None:
    add_template(rt, "sensors")
    for role in ("issuing", "root"):
        pem = rt.authority(role).certificate.public_bytes(serialization.Encoding.PEM)
        with pytest.raises(ConflictError, match="iotsec's own CAs"):
            claims.add_claim_ca(rt, "own", pem, "sensors")


def test_an_expired_claim_ca_is_refused(rt: Runtime, clock: FakeClock) -> None:
    add_template(rt, "sensors")
    ca = factory(clock())
    clock.advance(timedelta(days=7301))
    with pytest.raises(InvalidInputError, match="not valid now"):
        claims.add_claim_ca(rt, "acme", ca.pem, "sensors")


@pytest.mark.parametrize("url", ["http://hooks.example/x", "ftp://127.0.0.1/x", "https://",
                                 "https://user:pw@hooks.example/", "https://h/" + "a" * 2000,
                                 "not a url"])
def test_hook_urls_refused(url: str) -> None:
    with pytest.raises(InvalidInputError):
        claims.check_hook_url(url)


@pytest.mark.parametrize("url", ["https://hooks.example/claims", "http://127.0.0.1:8080/h",
                                 "http://[::1]/h", "http://localhost/h"])
def test_hook_urls_accepted(url: str) -> None:
    assert claims.check_hook_url(url) == url
