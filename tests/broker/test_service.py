"""The broker service without a running broker: generations, CRL freshness, the fleet."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.app.broker import mosquitto as service
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.broker.mosquitto import Layout
from iotsec.config import Settings
from iotsec.identity.registry import DeviceState
from tests.broker.support import short_broker_dir
from tests.conftest import FakeClock


@pytest.fixture
def frt(tmp_path: Path, clock: FakeClock) -> Iterator[Runtime]:
    """SQLite, a clock the test moves, and CRLs rebuilt only when due (30 days)."""
    settings = Settings(home=tmp_path / "home", crl_refresh_hours=24 * 30)
    init_home(settings, now=clock(), store_passphrase=True)
    runtime = open_runtime(settings, clock=clock)
    yield runtime
    runtime.close()


@pytest.fixture
def bdir() -> Iterator[Path]:
    with short_broker_dir("b") as path:
        yield path


def _render(rt: Runtime, d: Path) -> service.SyncResult:
    return service.render(rt, d, service.BrokerOptions(
        broker_user=service.default_broker_user()), dry_run=False)


def test_crl_is_refreshed_before_half_its_lifetime_is_gone(frt: Runtime, bdir: Path,
                                                          clock: FakeClock) -> None:
    first = _render(frt, bdir)
    assert not service.sync_needed(frt, bdir)
    clock.advance(timedelta(days=3))  # 4 of 7 days left: still fine
    assert not service.sync_needed(frt, bdir)
    clock.advance(timedelta(days=1))  # 3 of 7 days left: refresh
    assert service.sync_needed(frt, bdir)
    again = service.sync(frt, bdir, dry_run=False)
    assert again.crl_number > first.crl_number
    assert again.crl_next_update > first.crl_next_update
    assert not service.sync_needed(frt, bdir)


def test_changes_in_the_store_make_a_sync_needed(frt: Runtime, bdir: Path) -> None:
    add_device(frt, NewDevice.parse("d1"))
    cert = issue_with_keygen(frt, "d1", p12_passphrase=b"12345678").certificate
    _render(frt, bdir)
    assert not service.sync_needed(frt, bdir)
    change_state(frt, "d1", DeviceState.DISABLED)
    assert service.sync_needed(frt, bdir)
    result = service.sync(frt, bdir, dry_run=False)
    assert result.blocked == 1 and "user d1\ntopic deny #" in (
        Layout.parse(bdir).current / "acl").read_text()
    assert not service.sync_needed(frt, bdir)
    change_state(frt, "d1", DeviceState.ACTIVE)
    revoke(frt, cert.serial)
    assert service.sync_needed(frt, bdir)


def test_generations_are_swapped_and_pruned(frt: Runtime, bdir: Path) -> None:
    layout = Layout.parse(bdir)
    _render(frt, bdir)
    for _ in range(4):
        service.sync(frt, bdir, dry_run=False)
    assert os.readlink(layout.current) == "gen-000005"
    kept = sorted(p.name for p in bdir.glob("gen-*"))
    assert kept == ["gen-000003", "gen-000004", "gen-000005"]
    assert not list(bdir.glob(".gen-*")) and not list(bdir.glob(".current*"))
    manifest = json.loads((layout.current / "manifest.json").read_text())
    assert manifest["generation"] == 5
    # The server certificate and key are kept across generations until renewal is due.
    assert (layout.generation(4) / "server.key").read_bytes() == (
        layout.current / "server.key").read_bytes()
    assert (layout.private / "admin.secret").stat().st_mode & 0o777 == 0o600


def test_refresh_loop_syncs_when_needed(frt: Runtime, bdir: Path, clock: FakeClock) -> None:
    import threading

    first = _render(frt, bdir)
    stop = threading.Event()
    thread = threading.Thread(target=service.refresh_loop, args=(frt, bdir, stop),
                              kwargs={"interval": 0.05})
    thread.start()
    try:
        clock.advance(timedelta(days=5))
        layout = Layout.parse(bdir)
        deadline = 100
        while service.current_generation(layout) == first.generation and deadline:
            stop.wait(0.05)
            deadline -= 1
    finally:
        stop.set()
        thread.join(5)
    assert service.current_generation(layout) == first.generation + 1
