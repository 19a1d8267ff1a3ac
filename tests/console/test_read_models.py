"""The console's read models on SQLite and PostgreSQL: device search pages (keyset, every
filter), the overview's aggregates and expiry weeks, and the recent revocations."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import CertificateSigningRequestBuilder, Name, NameAttribute
from cryptography.x509.oid import NameOID

from iotsec.app.access.roles import assign_device
from iotsec.app.audit import run_audit
from iotsec.app.console import cache
from iotsec.app.console import overview as overview_module
from iotsec.app.console.certificates import recently_revoked
from iotsec.app.console.fleet import DeviceQuery, search_devices
from iotsec.app.console.overview import overview
from iotsec.app.identity.devices import NewDevice, import_devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.pki.revocation import revoke_device
from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError
from iotsec.findings.model import count_by_severity
from iotsec.identity.registry import DeviceState
from tests.conftest import FakeClock


def _csr(device_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (CertificateSigningRequestBuilder()
           .subject_name(Name([NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(Encoding.PEM)


def _all_pages(rt: Runtime, query: DeviceQuery, limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = search_devices(rt, query, after=after, limit=limit)
        pages.append([d.id for d in page.devices])
        if page.next_after is None:
            return pages
        after = page.next_after


def test_search_pages_cover_each_match_once_in_id_order(rt: Runtime):
    import_devices(rt, [NewDevice.parse(f"cam-{i:03d}", groups=["cameras"] if i % 2 else [],
                                        attributes={"site": "north" if i % 3 else "south",
                                                    "x_y": "50%_"})
                        for i in range(23)]
                   + [NewDevice.parse(f"camera-x{i}") for i in range(3)]
                   + [NewDevice.parse("sensor-1", groups=["cameras"])])
    change_state(rt, "cam-004", DeviceState.DISABLED)
    assign_device(rt, "sensor-1", ["device"])
    every = _all_pages(rt, DeviceQuery(), 5)
    assert [len(p) for p in every] == [5, 5, 5, 5, 5, 2]
    flat = [d for p in every for d in p]
    assert flat == sorted(flat) and len(flat) == 27
    cams = [d for p in _all_pages(rt, DeviceQuery.parse(prefix="cam-"), 10) for d in p]
    assert cams == [f"cam-{i:03d}" for i in range(23)]
    grouped = [d for p in _all_pages(rt, DeviceQuery.parse(prefix="cam", group="cameras"), 4)
               for d in p]
    assert grouped == [f"cam-{i:03d}" for i in range(1, 23, 2)]
    disabled = search_devices(rt, DeviceQuery.parse(state="disabled"))
    assert [d.id for d in disabled.devices] == ["cam-004"] and disabled.next_after is None
    # An exact page: the last page says there is no next one.
    assert search_devices(rt, DeviceQuery.parse(prefix="camera-"), limit=3).next_after is None
    south = [d for p in _all_pages(rt, DeviceQuery.parse(attribute="site=south"), 3)
             for d in p]
    assert south == [f"cam-{i:03d}" for i in range(0, 23, 3)]
    assert [d for p in _all_pages(rt, DeviceQuery.parse(attribute="x_y=50%_"), 50)
            for d in p] == [f"cam-{i:03d}" for i in range(23)]
    # LIKE's wildcards in a value are taken literally.
    assert search_devices(rt, DeviceQuery.parse(attribute="x_y=5_%_")).devices == []
    assert search_devices(rt, DeviceQuery.parse(attribute="x_y=50%")).devices == []
    assert search_devices(rt, DeviceQuery.parse(attribute="site=sou")).devices == []
    assert "sensor-1" in [d.id for d in search_devices(
        rt, DeviceQuery.parse(role="device"), limit=200).devices]


@pytest.mark.parametrize(("field", "value"), [("prefix", "cam/"), ("prefix", "a b"),
                                              ("state", "gone"), ("group", "bad group"),
                                              ("attribute", "no-equals-sign"),
                                              ("attribute", "bad key=v")])
def test_a_bad_search_is_refused_clearly(field: str, value: str):
    with pytest.raises(InvalidInputError):
        DeviceQuery.parse(**{field: value})


def test_the_overview_counts_states_and_expiry_weeks(rt: Runtime, clock: FakeClock,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache, "MIN_REFRESH", 0.0)
    import_devices(rt, [NewDevice.parse(f"d{i}") for i in range(4)])
    for days, device in ((3, "d0"), (10, "d1"), (10, "d2"), (400, "d3")):
        issue_from_csr(rt, device, _csr(device), days=days)
    revoke_device(rt, "d2")
    change_state(rt, "d3", DeviceState.DISABLED)
    view = overview(rt, fresh=True)
    assert view.devices == {"active": 3, "disabled": 1}
    assert view.certificates == {"valid": 3, "revoked": 1}
    assert len(view.expiring_per_week) == 26
    assert view.expiring_per_week[0] == 1 and view.expiring_per_week[1] == 1
    assert sum(view.expiring_per_week) == 2
    assert [r.device_id for r in recently_revoked(rt)] == ["d2"]
    # Cached: a change shows when asked fresh, or once the value is older than its lifetime
    # and a background refresh has computed it (the stale value is answered meanwhile).
    clock.advance(timedelta(days=5))
    assert overview(rt).certificates == view.certificates
    assert overview(rt, fresh=True).certificates == {"valid": 2, "revoked": 1, "expired": 1}
    change_state(rt, "d1", DeviceState.DISABLED)
    assert overview(rt).devices == {"active": 3, "disabled": 1}
    monkeypatch.setattr(overview_module, "OVERVIEW_TTL", 0.0)
    assert overview(rt).devices == {"active": 3, "disabled": 1}  # stale, refresh started
    deadline = time.monotonic() + 20
    while overview(rt).devices != {"active": 2, "disabled": 2}:
        assert time.monotonic() < deadline, "the background refresh never landed"
        time.sleep(0.05)


def test_the_overview_shows_the_newest_audit_by_severity(rt: Runtime,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache, "MIN_REFRESH", 0.0)
    assert overview(rt, fresh=True).audit is None
    result = run_audit(rt)
    rt.events.flush()
    audit = overview(rt, fresh=True).audit
    assert audit is not None and audit.by_severity == count_by_severity(result.findings)
