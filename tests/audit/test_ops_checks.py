"""Operations checks over a real store (SQLite and PostgreSQL): policy lint, event
recording, firmware security counters and API tokens; each triggered and not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.app.access import api_tokens as tokens
from iotsec.app.access.policy import apply_policy
from iotsec.app.identity import devices
from iotsec.app.ota import campaigns as ota
from iotsec.app.ota import device_updates as updates
from iotsec.firmware.campaign import Plan
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.image_keys import FirmwareKeyType, generate_signer
from tests.audit.conftest import Fleet, audit, found
from tests.ota.conftest import Keys, make_repo, publish
from tests.ota.support import tuf_key


@pytest.fixture(scope="module")
def fw_keys() -> Keys:
    return Keys(root=(tuf_key(), tuf_key(), tuf_key()), targets=tuf_key(),
                firmware=generate_signer(FirmwareKeyType.ED25519))


POLICY = b"""version: 1
roles:
- name: device
  description: own topics
  rules:
  - {effect: allow, action: publish, resource: "devices/${device.id}/#"}
  - {effect: allow, action: subscribe, resource: "devices/${device.id}/#"}
  - {effect: allow, action: receive, resource: "devices/${device.id}/#"}
%s
groups: {}
"""
SNOOP = b"""- name: snoop
  description: reads everything
  rules:
  - {effect: allow, action: subscribe, resource: "#"}
  - {effect: deny, action: publish, resource: "nothing/allows/this"}
"""


def test_policy_checks_map_lint_findings_by_kind(fleet: Fleet):
    rt = fleet.rt
    apply_policy(rt, POLICY % b"")
    result = audit(rt)
    assert found(result, "audit/policy-permissive") == set()
    assert found(result, "audit/policy-misconfigured") == set()
    assert result.outcomes["audit/policy-permissive"].checked == 1
    apply_policy(rt, POLICY % SNOOP)
    result = audit(rt)
    # 'snoop' is held by nobody (misconfigured), allows '#' (permissive) and denies
    # something no rule allows (misconfigured).
    assert found(result, "audit/policy-permissive") == {
        ("audit/policy-permissive", "policy:snoop#rule:0")}
    assert found(result, "audit/policy-misconfigured") == {
        ("audit/policy-misconfigured", "policy:snoop"),
        ("audit/policy-misconfigured", "policy:snoop#rule:1"),
    }
    (wild,) = result.findings_of("audit/policy-permissive")
    assert wild.severity.value == "high" and wild.evidence_dict()["lint"] == "wildcard-all"
    assert "iotsec policy apply" in wild.fix


def test_logging_disabled_when_no_event_is_recorded_while_devices_are_active(fleet: Fleet,
                                                                             clock):
    rt = fleet.rt
    assert found(audit(rt), "audit/logging-disabled") == set()
    clock.advance(timedelta(days=2))
    result = audit(rt)
    assert found(result, "audit/logging-disabled") == {("audit/logging-disabled", "events:store")}
    # A 3-day window still holds the fleet's connections.
    assert found(audit(rt, window=timedelta(days=3)), "audit/logging-disabled") == set()


def test_firmware_below_counter_flags_devices_behind_their_channel(fleet: Fleet, fw_keys: Keys,
                                                                   tmp_path: Path):
    rt = fleet.rt
    make_repo(rt, fw_keys)
    publish(rt, fw_keys, tmp_path, "1.0.0", 1)
    devices.import_devices(rt, [devices.NewDevice.parse(d, ["lab"], {"hardware": "rev-a"})
                                for d in ("fw-1", "fw-2")])
    plan = Plan(waves=(100,), failure_threshold=0.5, device_timeout=timedelta(hours=1))
    campaign = ota.create_campaign(rt, name="base", product="thermo",
                                   version=ImageVersion.parse("1.0.0"), channel="stable",
                                   group="lab", plan=plan)
    for d in ("fw-1", "fw-2"):
        for status in ("downloading", "installing"):
            updates.report(rt, d, campaign_id=campaign.id, status=status, version="0.9.0")
        updates.report(rt, d, campaign_id=campaign.id, status="installed", version="1.0.0")
    result = audit(rt)
    assert found(result, "audit/firmware-below-counter") == set()
    assert result.outcomes["audit/firmware-below-counter"].checked == 2
    # A security release on the channel: both devices are now behind it.
    publish(rt, fw_keys, tmp_path, "1.1.0", 2)
    result = audit(rt)
    assert found(result, "audit/firmware-below-counter") == {
        ("audit/firmware-below-counter", "device:fw-1"),
        ("audit/firmware-below-counter", "device:fw-2"),
    }
    finding = result.findings_of("audit/firmware-below-counter")[0]
    assert finding.evidence_dict()["required"] == 2
    assert finding.evidence_dict()["security_counter"] == 1
    assert "--channel stable" in finding.fix


def test_token_no_expiry_flags_eternal_and_idle_tokens(fleet: Fleet, clock):
    rt = fleet.rt
    assert found(audit(rt), "audit/token-no-expiry") == set()
    tokens.issue_token(rt, "ci-robot", tokens.Scope.OPERATOR, None)
    _, secret = tokens.issue_token(rt, "reporting", tokens.Scope.AUDITOR, timedelta(days=365))
    _, idle = tokens.issue_token(rt, "forgotten", tokens.Scope.AUDITOR, timedelta(days=365))
    result = audit(rt)
    assert found(result, "audit/token-no-expiry") == {("audit/token-no-expiry", "token:ci-robot")}
    assert result.findings_of("audit/token-no-expiry")[0].severity.value == "medium"
    clock.advance(timedelta(days=91))
    tokens.authenticate(rt, secret)  # 'reporting' is in use
    result = audit(rt, window=timedelta(days=120))
    assert found(result, "audit/token-no-expiry") == {
        ("audit/token-no-expiry", "token:ci-robot"),
        ("audit/token-no-expiry", "token:forgotten"),
    }
    assert idle not in repr(result)  # no secret in any finding
