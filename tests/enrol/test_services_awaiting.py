"""A device awaiting approval holds nothing: the decision engine denies it, the broker's
ACL (Mosquitto) blocks it, EMQX refuses it, update campaigns leave it out; once approved
it is treated as any pending device. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from iotsec.access.policy import Role, parse_rule_spec
from iotsec.app.access.decisions import check
from iotsec.app.access.roles import add_role
from iotsec.app.broker import emqx
from iotsec.app.broker.fleet import load_fleet
from iotsec.app.enrol import est, secrets, templates
from iotsec.app.identity.devices import NewDevice, add_device, list_devices
from iotsec.app.ota import campaigns as ota
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import compile_acl
from iotsec.errors import CampaignError
from iotsec.firmware.campaign import Plan
from iotsec.identity.enrolment import Template
from iotsec.identity.registry import DeviceState
from tests.enrol.services_support import csr
from tests.helpers import make_key
from tests.ota.conftest import Keys, make_repo, publish
from tests.ota.conftest import keys as keys  # a fixture

TOPIC = "t/w-1/temp"


@pytest.fixture
def waiting(rt: Runtime) -> tuple[est.BasicCredential, bytes]:
    """Device w-1, enrolled under a template that requires approval, in group lab with a
    role that lets it publish under t/<id>/; and the credential and CSR it polls with."""
    add_role(rt, Role.build("sensor", [parse_rule_spec("allow", "publish:t/${device.id}/#")]))
    templates.add_template(rt, Template.parse("lab", groups=["lab"], roles=["sensor"],
                                              require_approval=True))
    info, secret = secrets.create_secret(rt, device_id=None, template="lab",
                                         expires_in=timedelta(hours=1))
    credential = est.BasicCredential(info.id, secret)
    request = csr(make_key(), cn="w-1")
    outcome = est.enrol(rt, credential, request, label=None, source="192.0.2.1")
    assert isinstance(outcome, est.Pending)
    return credential, request


def test_the_decision_engine_denies_a_waiting_device(
        rt: Runtime, waiting: tuple[est.BasicCredential, bytes]) -> None:
    decision = check(rt, "w-1", "publish", TOPIC)
    assert not decision.allowed
    assert "awaiting-approval" in (decision.reason or "")
    est.approve(rt, "w-1")
    assert check(rt, "w-1", "publish", TOPIC).allowed  # pending, like any new device


def test_a_waiting_device_is_listed_by_its_state(
        rt: Runtime, waiting: tuple[est.BasicCredential, bytes]) -> None:
    add_device(rt, NewDevice.parse("other"))
    found = list_devices(rt, state=DeviceState.AWAITING_APPROVAL)
    assert [d.id for d in found] == ["w-1"]


def test_the_broker_acl_blocks_a_waiting_device(
        rt: Runtime, waiting: tuple[est.BasicCredential, bytes]) -> None:
    roles, fleet = load_fleet(rt)
    device = next(d for d in fleet if d.id == "w-1")
    assert not device.enabled and device.serials == ()
    acl = compile_acl(roles, fleet)
    assert "w-1" in acl.blocked
    assert "user w-1" not in acl.text
    est.approve(rt, "w-1")
    credential, request = waiting
    assert isinstance(est.enrol(rt, credential, request, label=None, source=None), est.Issued)
    roles, fleet = load_fleet(rt)
    device = next(d for d in fleet if d.id == "w-1")
    assert device.enabled and len(device.serials) == 1
    assert "w-1" not in compile_acl(roles, fleet).blocked


def test_emqx_refuses_a_waiting_device(
        rt: Runtime, waiting: tuple[est.BasicCredential, bytes]) -> None:
    who = {"username": "w-1", "clientid": "w-1"}
    assert emqx.authenticate(rt, json.dumps(who).encode())["result"] == "deny"
    body = json.dumps({**who, "action": "publish", "topic": TOPIC}).encode()
    assert emqx.authorize(rt, body) == {"result": "deny"}


def test_update_campaigns_leave_a_waiting_device_out(
        rt: Runtime, keys: Keys, tmp_path: Path,
        waiting: tuple[est.BasicCredential, bytes]) -> None:
    make_repo(rt, keys)
    publish(rt, keys, tmp_path, "1.0.0", 1)
    add_device(rt, NewDevice.parse("ready", ["lab"], {"hardware": "rev-a"}))
    plan = Plan(waves=(100,), failure_threshold=0.5, device_timeout=timedelta(hours=1))
    made = ota.create_campaign(rt, name="c1", product="thermo", channel="stable",
                               group="lab", plan=plan)
    assert [d.device_id for d in ota.campaign_devices(rt, made.id)] == ["ready"]
    with pytest.raises(CampaignError):
        ota.create_campaign(rt, name="c2", product="thermo", channel="stable",
                            devices=["w-1"], plan=plan)
