"""Certificate profiles through the service layer, on SQLite and PostgreSQL: storing,
selecting (request > device > groups > template > built-in), enforcing at issuance, and
refusals that change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select

from iotsec.app.access.roles import add_group
from iotsec.app.identity import devices
from iotsec.app.pki import cert_records, issuance, profiles
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, InvalidInputError, NotFoundError, ProfileRefusedError
from iotsec.pki.profiles import CertProfile
from iotsec.pki.x509 import OID_NO_REV_AVAIL
from iotsec.store import models as m
from iotsec.store.db import reading
from tests.helpers import make_csr, make_key

NO_REV = x509.ObjectIdentifier(OID_NO_REV_AVAIL)


def _ed25519_csr() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
           .sign(key, None))
    return csr.public_bytes(serialization.Encoding.PEM)


def _add(rt: Runtime, name: str, *, days: int = 90, key_types: str = "p256,ed25519",
         dns_from: tuple[str, ...] = (), eku: str = "clientAuth",
         no_revocation: bool = False) -> CertProfile:
    profile = CertProfile.parse(name, days=days, key_types=key_types, ekus=eku,
                                dns_from=dns_from, no_revocation=no_revocation)
    profiles.add_profile(rt, profile)
    return profile


def _cert(record: cert_records.CertificateRecord) -> x509.Certificate:
    return x509.load_der_x509_certificate(record.der)


def _dns(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def _rows(rt: Runtime) -> dict[str, int]:
    with reading(rt.engine) as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (m.cert_profiles, m.device_profiles, m.group_profiles,
                          m.certificates, m.provisioning_templates)}


def test_add_list_show_remove(rt: Runtime) -> None:
    _add(rt, "sensors", dns_from=("attr:hostname", "{device_id}.iot.example"))
    names = [p.profile.name for p in profiles.list_profiles(rt)]
    assert names == ["device", "server", "sensors"]
    stored, usage = profiles.get_profile(rt, "sensors")
    assert stored.profile.validity_days == 90
    assert stored.profile.key_types == ("p256", "ed25519")
    assert stored.profile.dns_from == ("{device_id}.iot.example", "attr:hostname")
    assert stored.created_at is not None
    assert (usage.devices, usage.groups, usage.templates) == (0, 0, 0)
    builtin, _ = profiles.get_profile(rt, "device")
    assert builtin.created_at is None and builtin.profile.builtin
    with pytest.raises(ConflictError, match="already exists"):
        _add(rt, "sensors")
    profiles.remove_profile(rt, "sensors")
    with pytest.raises(NotFoundError, match="no certificate profile 'sensors'"):
        profiles.get_profile(rt, "sensors")
    assert _rows(rt)["cert_profiles"] == 0


@pytest.mark.parametrize("name", ["device", "server"])
def test_builtins_cannot_be_removed_or_redefined(rt: Runtime, name: str) -> None:
    with pytest.raises(ConflictError, match="built-in"):
        profiles.remove_profile(rt, name)
    with pytest.raises(InvalidInputError, match="built-in"):
        CertProfile.parse(name, days=1, key_types="p256", ekus="clientAuth")


def test_precedence_request_device_group_builtin(rt: Runtime) -> None:
    for name, days in (("by-group", 30), ("by-device", 20), ("by-request", 10)):
        _add(rt, name, days=days)
    devices.add_device(rt, devices.NewDevice.parse("dev-1", ["fleet"]))
    devices.add_device(rt, devices.NewDevice.parse("dev-2", ["fleet"]))
    devices.add_device(rt, devices.NewDevice.parse("dev-3"))
    profiles.set_group_profile(rt, "fleet", "by-group")
    profiles.set_device_profile(rt, "dev-1", "by-device")
    batch = issuance.issue_batch(rt, [("dev-1", make_csr()), ("dev-2", make_csr()),
                                      ("dev-3", make_csr())])
    assert [(r.device_id, r.profile) for r in batch] == [
        ("dev-1", "by-device"), ("dev-2", "by-group"), ("dev-3", "device")]
    assert [r.not_after - rt.now() for r in batch] == [
        timedelta(days=20), timedelta(days=30), timedelta(days=365)]
    explicit = issuance.issue_from_csr(rt, "dev-1", make_csr(), profile="by-request")
    assert explicit.profile == "by-request"
    assert issuance.issue_from_csr(rt, "dev-2", make_csr(), profile="server").profile == "server"
    # Cleared, the device falls back to its group's.
    assert profiles.set_device_profile(rt, "dev-1", None) is None
    assert issuance.issue_from_csr(rt, "dev-1", make_csr()).profile == "by-group"


def test_groups_naming_different_profiles_refuse(rt: Runtime) -> None:
    _add(rt, "a-profile")
    _add(rt, "b-profile")
    add_group(rt, "alpha", [])
    add_group(rt, "beta", [])
    devices.add_device(rt, devices.NewDevice.parse("dev-1", ["alpha", "beta"]))
    profiles.set_group_profile(rt, "alpha", "a-profile")
    profiles.set_group_profile(rt, "beta", "b-profile")
    before = _rows(rt)
    with pytest.raises(ProfileRefusedError, match=r"alpha \(a-profile\), beta \(b-profile\)"):
        issuance.issue_from_csr(rt, "dev-1", make_csr())
    assert _rows(rt) == before
    # The same profile through both groups is no conflict; the device's own settles it.
    profiles.set_group_profile(rt, "beta", "a-profile")
    assert issuance.issue_from_csr(rt, "dev-1", make_csr()).profile == "a-profile"
    profiles.set_group_profile(rt, "beta", "b-profile")
    profiles.set_device_profile(rt, "dev-1", "b-profile")
    assert issuance.issue_from_csr(rt, "dev-1", make_csr()).profile == "b-profile"


def test_issuance_enforces_key_type_eku_dns_and_validity(rt: Runtime) -> None:
    _add(rt, "gw", days=60, key_types="ed25519", eku="clientAuth,serverAuth",
         dns_from=("attr:hostname", "{device_id}.gw.example"))
    devices.add_device(rt, devices.NewDevice.parse("GW-1",
                                                   attributes=["hostname=Gw1.Site.example"]))
    profiles.set_device_profile(rt, "GW-1", "gw")
    before = _rows(rt)
    with pytest.raises(ProfileRefusedError, match="allows ed25519 keys; the CSR's key is p256"):
        issuance.issue_from_csr(rt, "GW-1", make_csr())
    with pytest.raises(ProfileRefusedError, match="key is rsa3072"):
        issuance.issue_from_csr(rt, "GW-1", make_csr(make_key("rsa3072")))
    with pytest.raises(ProfileRefusedError, match="at most 60 days"):
        issuance.issue_from_csr(rt, "GW-1", _ed25519_csr(), days=61)
    assert _rows(rt) == before
    record = issuance.issue_from_csr(rt, "GW-1", _ed25519_csr())
    cert = _cert(record)
    assert _dns(cert) == ["gw-1.gw.example", "gw1.site.example"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    assert record.not_after - rt.now() == timedelta(days=60)
    assert issuance.issue_from_csr(rt, "GW-1", _ed25519_csr(), days=7).not_after - rt.now() \
        == timedelta(days=7)


@pytest.mark.parametrize(("attributes", "message"), [
    ([], "does not have"),
    (["hostname=not a name"], "is not a DNS name"),
    (["hostname=-bad.example"], "is not a DNS name"),
])
def test_dns_from_attribute_refusals(rt: Runtime, attributes: list[str], message: str) -> None:
    _add(rt, "named", dns_from=("attr:hostname",))
    devices.add_device(rt, devices.NewDevice.parse("dev-1", attributes=attributes))
    before = _rows(rt)
    with pytest.raises(ProfileRefusedError, match=message):
        issuance.issue_from_csr(rt, "dev-1", make_csr(), profile="named")
    assert _rows(rt) == before


def test_no_revocation_profile(rt: Runtime) -> None:
    rt.settings.crl_url = "http://ca.example/crl"
    _add(rt, "ephemeral", days=7, no_revocation=True)
    devices.add_device(rt, devices.NewDevice.parse("dev-1"))
    short = _cert(issuance.issue_from_csr(rt, "dev-1", make_csr(), profile="ephemeral"))
    ext = short.extensions.get_extension_for_oid(NO_REV)
    assert not ext.critical
    assert ext.value.public_bytes() == b"\x05\x00"  # NULL
    with pytest.raises(x509.ExtensionNotFound):
        short.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    normal = _cert(issuance.issue_from_csr(rt, "dev-1", make_csr()))
    assert normal.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    with pytest.raises(x509.ExtensionNotFound):
        normal.extensions.get_extension_for_oid(NO_REV)
    with pytest.raises(InvalidInputError, match="at most 7 days"):
        CertProfile.parse("longer", days=8, key_types="p256", ekus="clientAuth",
                          no_revocation=True)


def test_remove_refused_while_selected(rt: Runtime) -> None:
    from iotsec.app.enrol.templates import add_template
    from iotsec.identity.enrolment import Template

    _add(rt, "kept")
    devices.add_device(rt, devices.NewDevice.parse("dev-1", ["fleet"]))
    for select_it, clear_it, who in (
            (lambda: profiles.set_device_profile(rt, "dev-1", "kept"),
             lambda: profiles.set_device_profile(rt, "dev-1", None), "device 'dev-1'"),
            (lambda: profiles.set_group_profile(rt, "fleet", "kept"),
             lambda: profiles.set_group_profile(rt, "fleet", None), "group 'fleet'"),
            (lambda: add_template(rt, Template.parse("t1", profile="kept")),
             lambda: add_template(rt, Template.parse("t1"), replace=True),
             "enrolment template 't1'")):
        select_it()
        with pytest.raises(ConflictError, match=f"used by {who}"):
            profiles.remove_profile(rt, "kept")
        clear_it()
    assert profiles.get_profile(rt, "kept")[1].templates == 0
    profiles.remove_profile(rt, "kept")


def test_selecting_unknown_profile_or_subject_changes_nothing(rt: Runtime) -> None:
    from iotsec.app.enrol.templates import add_template
    from iotsec.identity.enrolment import Template

    devices.add_device(rt, devices.NewDevice.parse("dev-1", ["fleet"]))
    before = _rows(rt)
    with pytest.raises(NotFoundError, match="no certificate profile 'nope'"):
        profiles.set_device_profile(rt, "dev-1", "nope")
    with pytest.raises(NotFoundError, match="no certificate profile 'nope'"):
        profiles.set_group_profile(rt, "fleet", "nope")
    with pytest.raises(NotFoundError, match="device 'dev-2' does not exist"):
        profiles.set_device_profile(rt, "dev-2", "server")
    with pytest.raises(NotFoundError, match="group 'other' does not exist"):
        profiles.set_group_profile(rt, "other", "server")
    with pytest.raises(NotFoundError, match="no certificate profile 'nope'"):
        add_template(rt, Template.parse("t1", profile="nope"))
    with pytest.raises(NotFoundError, match="no certificate profile 'nope'"):
        issuance.issue_from_csr(rt, "dev-1", make_csr(), profile="nope")
    assert _rows(rt) == before


def test_renewal_keeps_the_profile_and_refuses_a_removed_one(rt: Runtime) -> None:
    _add(rt, "short", days=30)
    devices.add_device(rt, devices.NewDevice.parse("dev-1"))
    first = issuance.issue_from_csr(rt, "dev-1", make_csr(), profile="short")
    renewed = issuance.renew(rt, first.serial, make_csr())
    assert renewed.profile == "short"
    assert renewed.not_after - rt.now() == timedelta(days=30)
    profiles.remove_profile(rt, "short")
    before = _rows(rt)
    with pytest.raises(ProfileRefusedError, match="'short', which no longer exists"):
        issuance.renew(rt, renewed.serial, make_csr())
    assert _rows(rt) == before


def test_resolution_is_one_query_per_batch(rt: Runtime) -> None:
    """Profiles of a whole batch cost one extra statement (device and group selections
    and the definitions they name, together)."""
    from sqlalchemy import event

    _add(rt, "by-group", days=30)
    _add(rt, "by-device", days=20)
    devices.import_devices(rt, [devices.NewDevice.parse(f"d-{i}", ["fleet"]) for i in range(40)])
    profiles.set_group_profile(rt, "fleet", "by-group")
    profiles.set_device_profile(rt, "d-0", "by-device")
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(rt.engine, "before_cursor_execute", seen)
    try:
        issued = issuance.issue_batch(rt, [(f"d-{i}", make_csr()) for i in range(40)])
    finally:
        event.remove(rt.engine, "before_cursor_execute", seen)
    assert sorted({r.profile for r in issued}) == ["by-device", "by-group"]
    touching = [s for s in statements if "profiles" in s]
    assert len(touching) == 1, touching
