"""Campaigns over the store (SQLite and PostgreSQL): waves, automatic pause, timeouts,
operator controls, device reports and the server-side anti-rollback record."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.app.events import list_events
from iotsec.app.identity import devices
from iotsec.app.ota import anti_rollback
from iotsec.app.ota import campaigns as ota
from iotsec.app.ota import device_updates as updates
from iotsec.app.ota import tick as campaign_tick
from iotsec.errors import (
    CampaignError,
    CampaignStateError,
    ConflictError,
    DeviceRollbackError,
    NotFoundError,
    OtaReportError,
)
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan
from iotsec.firmware.image import ImageVersion
from tests.ota.conftest import make_repo, publish

S = DeviceStatus
PLAN = Plan(waves=(10, 50, 100), failure_threshold=0.2, device_timeout=timedelta(hours=1))


@pytest.fixture
def fleet(rt, keys, tmp_path: Path) -> list[str]:
    make_repo(rt, keys)
    publish(rt, keys, tmp_path, "1.0.0", 1)
    publish(rt, keys, tmp_path, "1.1.0", 2)
    ids = [f"dev-{i:02d}" for i in range(20)]
    devices.import_devices(rt, [devices.NewDevice.parse(d, ["lab"], {"hardware": "rev-a"})
                                for d in ids])
    return ids


def by_status(rt, campaign_id: int) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for d in ota.campaign_devices(rt, campaign_id):
        found.setdefault(d.status.value, []).append(d.device_id)
    return found


def install(rt, campaign_id: int, device_id: str) -> None:
    for status in ("downloading", "installing"):
        updates.report(rt, device_id, campaign_id=campaign_id, status=status, version="1.0.0")
    updates.report(rt, device_id, campaign_id=campaign_id, status="installed", version="1.1.0")


def test_a_campaign_rolls_out_wave_by_wave(rt, fleet, clock):
    c = ota.create_campaign(rt, name="spring", product="thermo", channel="stable",
                            group="lab", plan=PLAN, actor="alice")
    assert c.state is CampaignState.ACTIVE and str(c.release.version) == "1.1.0+0"
    assert [w.size for w in c.waves] == [2, 8, 10]
    first = by_status(rt, c.id)["pending"]
    assert len(first) == 2
    waiting = by_status(rt, c.id)["waiting"][0]
    assert updates.assignment(rt, waiting) is None
    got = updates.assignment(rt, first[0])
    assert got is not None and got.release.target == "thermo/1.1.0-0.bin"
    install(rt, c.id, first[0])
    assert ota.get_campaign(rt, c.id).current_wave == 0
    install(rt, c.id, first[1])
    c = ota.get_campaign(rt, c.id)
    assert c.current_wave == 1 and c.waves[1].of(S.PENDING) == 8
    for device in by_status(rt, c.id)["pending"]:
        install(rt, c.id, device)
    for device in by_status(rt, c.id)["pending"]:
        install(rt, c.id, device)
    c = ota.get_campaign(rt, c.id)
    assert c.state is CampaignState.COMPLETED and c.totals.of(S.INSTALLED) == 20
    changes = [e.detail["change"] for e in list_events(rt.engine, kind="ota.campaign")]
    assert "completed: every wave finished" in changes and "created" in changes


def test_failures_pause_the_campaign_and_resume_acknowledges_them(rt, fleet):
    c = ota.create_campaign(rt, name="f", product="thermo", version=ImageVersion.parse("1.1.0"),
                            group="lab", plan=PLAN)
    for device in by_status(rt, c.id)["pending"]:
        install(rt, c.id, device)
    wave2 = by_status(rt, c.id)["pending"]
    updates.report(rt, wave2[0], campaign_id=c.id, status="failed", version="1.0.0",
                   detail="flash write error")
    assert ota.get_campaign(rt, c.id).state is CampaignState.ACTIVE  # 1/8 = 12.5 %
    updates.report(rt, wave2[1], campaign_id=c.id, status="rolled_back", version="1.0.0")
    c = ota.get_campaign(rt, c.id)
    assert c.state is CampaignState.PAUSED and "2 of 8" in (c.reason or "")
    # Paused: no new device is sent the update, but started devices may still report.
    assert updates.assignment(rt, wave2[2]) is None
    with pytest.raises(CampaignStateError):
        ota.pause_campaign(rt, c.id)
    c = ota.resume_campaign(rt, c.id, actor="bob")
    assert c.state is CampaignState.ACTIVE
    assert updates.assignment(rt, wave2[2]) is not None


def test_devices_that_never_report_time_out_and_count_as_failures(rt, fleet, clock):
    c = ota.create_campaign(rt, name="t", product="thermo", group="lab", channel="stable",
                            plan=Plan(waves=(10, 100), failure_threshold=0.5,
                                      device_timeout=timedelta(hours=1)))
    first = by_status(rt, c.id)["pending"]
    updates.report(rt, first[0], campaign_id=c.id, status="downloading", version="1.0.0")
    clock.advance(timedelta(minutes=59))
    assert "timed_out" not in by_status(rt, c.id)
    clock.advance(timedelta(minutes=1))
    c = ota.get_campaign(rt, c.id)
    assert sorted(by_status(rt, c.id)["timed_out"]) == sorted(first)
    assert c.state is CampaignState.PAUSED  # 2 of 2 failed
    # A late report still counts.
    updates.report(rt, first[1], campaign_id=c.id, status="installed", version="1.1.0")
    assert ota.get_campaign(rt, c.id).waves[0].of(S.INSTALLED) == 1


def test_abort_cancels_devices_that_have_not_started(rt, fleet):
    c = ota.create_campaign(rt, name="a", product="thermo", group="lab", channel="stable",
                            plan=PLAN)
    first = by_status(rt, c.id)["pending"]
    updates.report(rt, first[0], campaign_id=c.id, status="installing", version="1.0.0")
    c = ota.abort_campaign(rt, c.id, actor="carol", reason="bad build")
    assert c.state is CampaignState.ABORTED and c.reason == "bad build"
    states = by_status(rt, c.id)
    assert len(states["cancelled"]) == 19 and states["installing"] == [first[0]]
    with pytest.raises(OtaReportError):
        updates.report(rt, first[1], campaign_id=c.id, status="downloading", version="1.0.0")
    # The device that had started may still tell how it ended.
    updates.report(rt, first[0], campaign_id=c.id, status="installed", version="1.1.0")
    for op in (ota.resume_campaign, ota.abort_campaign, ota.pause_campaign):
        with pytest.raises(CampaignStateError):
            op(rt, c.id)
    # The devices are free for a new campaign.
    ota.create_campaign(rt, name="b", product="thermo", group="lab", channel="stable",
                        plan=PLAN)


def test_reports_that_do_not_fit_are_refused(rt, fleet):
    c = ota.create_campaign(rt, name="r", product="thermo", devices=fleet[:3],
                            channel="stable", plan=Plan())
    with pytest.raises(OtaReportError):
        updates.report(rt, fleet[5], campaign_id=c.id, status="downloading", version="1.0.0")
    with pytest.raises(OtaReportError):  # installed, but running another version
        updates.report(rt, fleet[0], campaign_id=c.id, status="installed", version="1.0.0")
    with pytest.raises(OtaReportError):
        updates.report(rt, fleet[0], campaign_id=c.id, status="pending", version="1.0.0")
    with pytest.raises(NotFoundError):
        updates.report(rt, fleet[0], campaign_id=999, status="downloading", version="1.0.0")
    failures = [e for e in list_events(rt.engine, kind="ota.report") if e.outcome == "failure"]
    assert len(failures) == 2


def test_the_server_refuses_a_report_below_the_recorded_security_counter(rt, fleet):
    c = ota.create_campaign(rt, name="up", product="thermo", devices=fleet[:1],
                            channel="stable", plan=Plan())
    install(rt, c.id, fleet[0])
    record = anti_rollback.firmware_record(rt, fleet[0])
    assert (record.security_counter, record.version, record.min_version) == (2, "1.1.0+0",
                                                                             "1.1.0+0")
    # A second campaign: the device claims it runs 1.0.0 (counter 1) again.
    c2 = ota.create_campaign(rt, name="again", product="thermo", devices=fleet[:1],
                             version=ImageVersion.parse("1.1.0"), plan=Plan())
    with pytest.raises(DeviceRollbackError):
        updates.report(rt, fleet[0], campaign_id=c2.id, status="downloading", version="1.0.0")
    with pytest.raises(DeviceRollbackError):  # an unpublished version below the floor
        updates.report(rt, fleet[0], campaign_id=c2.id, status="downloading", version="1.0.9")
    refused = [e for e in list_events(rt.engine, kind="ota.report") if e.outcome == "failure"]
    assert refused and refused[0].detail["reason"] == "ota-device-rollback"
    updates.report(rt, fleet[0], campaign_id=c2.id, status="installed", version="1.1.0")


def test_campaign_creation_is_checked(rt, fleet):
    with pytest.raises(NotFoundError):
        ota.create_campaign(rt, name="x", product="thermo", version=ImageVersion.parse("9.0"),
                            group="lab", plan=PLAN)
    with pytest.raises(CampaignError):
        ota.create_campaign(rt, name="x", product="thermo", channel="stable", plan=PLAN)
    with pytest.raises(CampaignError):
        ota.create_campaign(rt, name="x", product="thermo", channel="stable", group="nobody",
                            plan=PLAN)
    with pytest.raises(NotFoundError):
        ota.create_campaign(rt, name="x", product="thermo", channel="stable",
                            devices=["ghost"], plan=PLAN)
    devices.add_device(rt, devices.NewDevice.parse("old-board", ["lab"], {"hardware": "rev-0"}))
    with pytest.raises(CampaignError, match="hardware"):
        ota.create_campaign(rt, name="x", product="thermo", channel="stable", group="lab",
                            plan=PLAN)
    ota.create_campaign(rt, name="x", product="thermo", channel="stable", devices=fleet[:2],
                        plan=PLAN)
    with pytest.raises(ConflictError):
        ota.create_campaign(rt, name="y", product="thermo", channel="stable",
                            devices=fleet[1:3], plan=PLAN)


def test_the_server_evaluates_campaigns_in_the_background(rt, fleet, clock):
    """``iotsec serve`` runs ``tick_loop``: devices time out and the campaign pauses with no
    report, status read or cron job to trigger it."""
    import threading
    import time

    from sqlalchemy import select

    from iotsec.store import models as m
    from iotsec.store.db import reading

    c = ota.create_campaign(rt, name="t", product="thermo", group="lab", channel="stable",
                            plan=Plan(waves=(10, 100), failure_threshold=0.5,
                                      device_timeout=timedelta(hours=1)))
    clock.advance(timedelta(hours=2))

    def stored_state() -> str:
        with reading(rt.engine) as conn:
            return str(conn.execute(select(m.ota_campaigns.c.state)
                                    .where(m.ota_campaigns.c.id == c.id)).scalar_one())

    assert stored_state() == CampaignState.ACTIVE.value
    rt.settings.campaign_tick_seconds = 0.05
    stop = threading.Event()
    worker = threading.Thread(target=campaign_tick.tick_loop, args=(rt, stop))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while stored_state() != CampaignState.PAUSED.value and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()
    assert stored_state() == CampaignState.PAUSED.value
