"""The console's read models on SQLite and PostgreSQL: device search pages (keyset, every
filter), the overview's aggregates and expiry weeks, and the recent revocations."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import CertificateSigningRequestBuilder, Name, NameAttribute
from cryptography.x509.oid import NameOID
from sqlalchemy import insert

from iotsec.app.access.roles import assign_device
from iotsec.app.audit import run_audit
from iotsec.app.console import cache
from iotsec.app.console import overview as overview_module
from iotsec.app.console.certificates import recently_revoked
from iotsec.app.console.fleet import DeviceQuery, search_devices
from iotsec.app.console.overview import overview, overview_now
from iotsec.app.identity.devices import NewDevice, import_devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.pki.revocation import revoke_device
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import InvalidInputError
from iotsec.findings.model import count_by_severity
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import transaction
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
    view = overview_now(rt, fresh=True)
    assert view.devices == {"active": 3, "disabled": 1}
    assert view.certificates == {"valid": 3, "revoked": 1}
    assert len(view.expiring_per_week) == 26
    assert view.expiring_per_week[0] == 1 and view.expiring_per_week[1] == 1
    assert sum(view.expiring_per_week) == 2
    assert [r.device_id for r in recently_revoked(rt)] == ["d2"]
    # Cached: a change shows when asked fresh, or once the value is older than its lifetime
    # and a background refresh has computed it (the stale value is answered meanwhile).
    clock.advance(timedelta(days=5))
    assert overview_now(rt).certificates == view.certificates
    assert overview_now(rt, fresh=True).certificates == {"valid": 2, "revoked": 1, "expired": 1}
    change_state(rt, "d1", DeviceState.DISABLED)
    assert overview_now(rt).devices == {"active": 3, "disabled": 1}
    monkeypatch.setattr(overview_module, "OVERVIEW_TTL", 0.0)
    assert overview_now(rt).devices == {"active": 3, "disabled": 1}  # stale, refresh started
    deadline = time.monotonic() + 20
    while overview_now(rt).devices != {"active": 2, "disabled": 2}:
        assert time.monotonic() < deadline, "the background refresh never landed"
        time.sleep(0.05)


def test_the_overview_shows_the_newest_audit_by_severity(rt: Runtime,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cache, "MIN_REFRESH", 0.0)
    assert overview_now(rt, fresh=True).audit is None
    result = run_audit(rt)
    rt.events.flush()
    audit = overview_now(rt, fresh=True).audit
    assert audit is not None and audit.by_severity == count_by_severity(result.findings)


def _settled(rt: Runtime, key: str, deadline: float = 20.0) -> None:
    """Wait until no computation of ``key`` is under way in ``rt``."""
    entry = cache._entry(rt, key)
    end = time.monotonic() + deadline
    while entry.refreshing:
        assert time.monotonic() < end, f"{key} was never computed"
        time.sleep(0.02)


def test_a_view_never_waits_for_the_figures(rt: Runtime, monkeypatch: pytest.MonkeyPatch):
    """The first view gets nothing and starts the computation; the next views get the
    figures; a computation that is slow does not hold up a view."""
    import_devices(rt, [NewDevice.parse("d1")])
    gate = threading.Event()
    compute = overview_module._compute

    def slow(runtime: Runtime) -> overview_module.Overview:
        assert gate.wait(20)
        return compute(runtime)

    monkeypatch.setattr(overview_module, "_compute", slow)
    assert overview(rt) is None  # started, not waited for
    assert overview(rt) is None  # still under way: not started twice
    assert cache._entry(rt, "overview").refreshing
    gate.set()
    _settled(rt, "overview")
    held = overview(rt)
    assert held is not None and held.value.devices == {"pending": 1} and not held.refreshing


def test_a_new_process_answers_the_stored_figures_at_once(rt: Runtime, settings: Settings,
                                                          clock: FakeClock,
                                                          monkeypatch: pytest.MonkeyPatch):
    import_devices(rt, [NewDevice.parse(f"d{i}") for i in range(3)])
    issue_from_csr(rt, "d0", _csr("d0"), days=10)
    first = overview_now(rt)
    other = open_runtime(settings, clock=clock)
    try:
        def never(runtime: Runtime) -> overview_module.Overview:
            raise AssertionError("the stored figures were fresh: nothing to compute")

        monkeypatch.setattr(overview_module, "_compute", never)
        held = overview(other)
        assert held is not None and not held.refreshing
        assert held.value == first  # every figure survives the store's encoding
        # Once they are older than their lifetime, one process recomputes them: the other
        # finds the claim taken and answers what it holds.
        monkeypatch.setattr(overview_module, "OVERVIEW_TTL", 0.0)
        gate = threading.Event()
        computing: list[Runtime] = []

        def gated(runtime: Runtime) -> overview_module.Overview:
            computing.append(runtime)
            assert gate.wait(20)
            return compute_real(runtime)

        monkeypatch.setattr(overview_module, "_compute", gated)
        assert overview(rt) is not None and cache._entry(rt, "overview").refreshing
        deadline = time.monotonic() + 20
        while computing != [rt]:  # rt's thread has the claim and computes
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert overview(other) is not None  # answers what it holds...
        _settled(other, "overview")
        assert computing == [rt]  # ...and does not compute: the claim is rt's
        import_devices(rt, [NewDevice.parse("d9")])
        gate.set()
        _settled(rt, "overview")
        # The other process, once its figures are older than their lifetime, takes the
        # newer ones from the store instead of computing them.
        monkeypatch.setattr(overview_module, "OVERVIEW_TTL", 3600.0)
        monkeypatch.setattr(overview_module, "_compute", never)
        cache._entry(other, "overview").at -= 7200
        assert overview_now(other).devices == {"active": 1, "pending": 3}
    finally:
        other.close()


compute_real = overview_module._compute


def test_stored_figures_another_version_wrote_are_recomputed(rt: Runtime):
    import_devices(rt, [NewDevice.parse("d1")])
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.console_summaries).values(
            key="overview", computed_at=int(time.time()), body='{"devices": 3}'))
    assert overview_now(rt).devices == {"pending": 1}
