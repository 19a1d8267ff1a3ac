"""The console's firmware page over a real update repository and campaign (SQLite and
PostgreSQL): wave progress and failure rate, and pause, resume and abort by an operator
(recorded), refused to an auditor and without confirmation."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.identity import devices
from iotsec.app.ota import campaigns as ota
from iotsec.app.ota import device_updates as updates
from iotsec.app.runtime import Runtime
from iotsec.firmware.campaign import CampaignState, Plan
from iotsec.firmware.image import ImageVersion
from tests.console.conftest import ORIGIN
from tests.ota.conftest import Keys, keys, make_repo, publish  # noqa: F401 (fixture)

POST = {"origin": ORIGIN}


def _campaign(rt: Runtime, keys: Keys, tmp_path: Path) -> int:  # noqa: F811
    make_repo(rt, keys)
    publish(rt, keys, tmp_path, "1.0.0", 1)
    publish(rt, keys, tmp_path, "1.1.0", 2)
    ids = [f"dev-{i:02d}" for i in range(10)]
    devices.import_devices(rt, [devices.NewDevice.parse(d, ["lab"], {"hardware": "rev-a"})
                                for d in ids])
    c = ota.create_campaign(rt, name="spring", product="thermo",
                            version=ImageVersion.parse("1.1.0"), group="lab",
                            plan=Plan(waves=(50, 100), failure_threshold=0.5,
                                      device_timeout=timedelta(hours=1)))
    for device in ota.campaign_devices(rt, c.id):
        if device.status.value == "pending":
            updates.report(rt, device.device_id, campaign_id=c.id, status="failed",
                           version="1.0.0", detail="flash write error")
            break
    return c.id


def _sign_in(web: TestClient, rt: Runtime, scope: Scope) -> str:
    token = issue_token(rt, f"{scope.value}-person", scope, None)[1]
    assert web.post("/ui/signin", data={"token": token}, headers=POST).status_code == 303
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', web.get("/ui/firmware").text)
    assert found
    return found[1]


def test_the_operator_pauses_resumes_and_aborts_a_campaign(
        web: TestClient, rt: Runtime, keys: Keys, tmp_path: Path):  # noqa: F811
    campaign = _campaign(rt, keys, tmp_path)
    csrf = _sign_in(web, rt, Scope.OPERATOR)
    page = web.get("/ui/firmware").text
    assert "#1 spring: thermo 1.1.0" in page.replace(f"#{campaign} ", "#1 ")
    assert "1 of 10 devices finished, failure rate 100.0 %" in page
    assert "1.0.0" in page and "Pause campaign" in page

    def control(**form: str) -> int:
        return web.post(f"/ui/firmware/campaigns/{campaign}/control",
                        data={"csrf": csrf, **form}, headers=POST).status_code

    assert control(do="pause", reason="checking the flash errors") == 303
    assert ota.get_campaign(rt, campaign).state is CampaignState.PAUSED
    assert "Resume campaign" in web.get("/ui/firmware").text
    assert control(do="resume") == 303
    assert ota.get_campaign(rt, campaign).state is CampaignState.ACTIVE
    assert control(do="abort") == 422  # not confirmed
    assert ota.get_campaign(rt, campaign).state is CampaignState.ACTIVE
    assert control(do="abort", sure="yes") == 303
    assert ota.get_campaign(rt, campaign).state is CampaignState.ABORTED
    assert "Abort campaign" not in web.get("/ui/firmware").text


def test_the_auditor_sees_campaigns_but_cannot_control_them(
        web: TestClient, rt: Runtime, keys: Keys, tmp_path: Path):  # noqa: F811
    campaign = _campaign(rt, keys, tmp_path)
    csrf = _sign_in(web, rt, Scope.AUDITOR)
    page = web.get("/ui/firmware").text
    assert "spring" in page and "Pause campaign" not in page and "Abort" not in page
    r = web.post(f"/ui/firmware/campaigns/{campaign}/control",
                 data={"csrf": csrf, "do": "pause"}, headers=POST)
    assert r.status_code == 403
    assert ota.get_campaign(rt, campaign).state is CampaignState.ACTIVE
