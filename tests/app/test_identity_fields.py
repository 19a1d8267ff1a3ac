"""The JSON of a certificate and of a device as plain dicts (app/wire/identity_fields.py)
is what their wire models write: the API answers with the models, ``cert list``,
``device show`` and the API's issuance fast path with the dicts."""

from __future__ import annotations

from datetime import timedelta

from iotsec.app.identity import devices
from iotsec.app.identity.device_reads import get_device
from iotsec.app.pki import cert_records, issuance, revocation
from iotsec.app.wire.identity import CertificateOut, DeviceDetailOut, DeviceOut
from iotsec.app.wire.identity_fields import (
    certificate_fields,
    device_detail_fields,
    device_fields,
)
from iotsec.pki.reasons import RevocationReason
from tests.helpers import make_csr


def test_the_dicts_are_what_the_models_write_for_every_kind_of_record(rt):
    devices.add_device(rt, devices.NewDevice.parse("dev-1", ["fleet"], {"site": "a"}))
    devices.add_device(rt, devices.NewDevice.parse("dev-2"))
    valid = issuance.issue_from_csr(rt, "dev-1", make_csr())
    revoked = issuance.issue_from_csr(rt, "dev-1", make_csr())
    renewed = issuance.issue_from_csr(rt, "dev-1", make_csr())
    revocation.revoke(rt, revoked.serial, RevocationReason.keyCompromise)
    issuance.renew(rt, renewed.serial, make_csr(), grace=timedelta(days=7))
    held = cert_records.list_certificates(rt, device_id="dev-1")
    now = rt.now()
    assert sorted(c.status(now) for c in held) == ["revoked", "superseded", "valid", "valid"]
    for c in held:
        for with_pem in (False, True):
            fields = certificate_fields(c, now, with_pem=with_pem)
            assert CertificateOut.from_domain(c, now, with_pem=with_pem).model_dump(
                mode="json") == fields
        assert fields["not_after"].endswith("Z") and fields["pem"] == c.pem
    assert {c.serial for c in held} >= {valid.serial, revoked.serial, renewed.serial}
    for device_id in ("dev-1", "dev-2"):
        device = get_device(rt, device_id)
        assert DeviceOut.from_domain(device).model_dump(mode="json") == device_fields(device)
        mine = [c for c in held if c.device_id == device_id]
        for profile in (None, "short"):
            assert DeviceDetailOut.from_records(device, mine, now, profile).model_dump(
                mode="json") == device_detail_fields(device, mine, now, profile)
    assert device_fields(get_device(rt, "dev-1"))["attributes"] == {"site": "a"}
