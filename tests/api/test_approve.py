"""``POST /v1/devices/{id}/approve``: the operator API's approval of a device that enrolled
under a template requiring it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from iotsec.app.enrol import est as est_service
from iotsec.app.enrol.est import BasicCredential, Issued, Pending
from iotsec.app.enrol.secrets import create_secret
from iotsec.app.enrol.templates import add_template
from iotsec.app.events import list_events
from iotsec.app.identity.devices import get_device
from iotsec.app.runtime import Runtime
from iotsec.identity.enrolment import Template
from iotsec.identity.registry import DeviceState
from tests.enrol.services_support import csr
from tests.helpers import make_key


def test_approve_moves_a_waiting_device_on(api: TestClient, anon: TestClient,
                                           rt: Runtime) -> None:
    add_template(rt, Template.parse("gated", groups=["cams"], require_approval=True))
    info, secret = create_secret(rt, device_id=None, template="gated")
    request = csr(make_key(), cn="cam-01")
    credential = BasicCredential(info.id, secret)
    assert isinstance(est_service.enrol(rt, credential, request, label=None, source="t"),
                      Pending)

    assert anon.post("/v1/devices/cam-01/approve").status_code == 401
    resp = api.post("/v1/devices/cam-01/approve")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "pending"
    assert get_device(rt, "cam-01").state is DeviceState.PENDING
    assert isinstance(est_service.enrol(rt, credential, request, label=None, source="t"),
                      Issued)

    # Only a device awaiting approval can be approved; an unknown one is a 404.
    again = api.post("/v1/devices/cam-01/approve")
    assert again.status_code == 409, again.text
    assert api.post("/v1/devices/nobody/approve").status_code == 404
    approved = list_events(rt.engine, kind="est.approved")
    assert [(e.actor, e.subject) for e in approved] == [("admin", "cam-01")]
