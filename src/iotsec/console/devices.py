"""The console's device pages: the searchable list, a device's page (certificates, roles,
what it may do, an authorization check, its timeline) and its actions, each behind a
confirmation page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from starlette.responses import RedirectResponse, Response

from iotsec.app.access.decisions import check
from iotsec.app.console.fleet import DeviceQuery, device_roles, search_devices
from iotsec.app.enrol.est import approve
from iotsec.app.identity.devices import get_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.incidents import timeline
from iotsec.app.monitor.quarantine import quarantine_devices, release_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.pki.cert_records import list_certificates
from iotsec.app.pki.revocation import revoke_device
from iotsec.app.runtime import Runtime
from iotsec.console.web import Ctx, page, render
from iotsec.errors import InvalidInputError
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.pki.crl import RevocationReason

__all__ = ["ACTIONS", "Action", "confirm", "device_page", "devices", "perform"]

PAGE = 50


@dataclass(frozen=True, slots=True)
class Action:
    label: str
    warning: str
    #: The device states in which the action is offered.
    offered: tuple[DeviceState, ...]
    run: Callable[[Runtime, str, str], object]


ACTIONS: dict[str, Action] = {
    "disable": Action(
        "Disable", "The broker and the API refuse the device until it is enabled again; its "
        "certificates are kept.", (DeviceState.ACTIVE, DeviceState.PENDING,
                                   DeviceState.AWAITING_APPROVAL),
        lambda rt, d, who: change_state(rt, d, DeviceState.DISABLED, actor=who)),
    "enable": Action(
        "Enable", "The device is active again with the certificates it holds.",
        (DeviceState.DISABLED,),
        lambda rt, d, who: change_state(rt, d, DeviceState.ACTIVE, actor=who)),
    "revoke": Action(
        "Revoke certificates", "Every certificate of the device is revoked now and listed on "
        "the next CRL; this cannot be undone.", (DeviceState.ACTIVE, DeviceState.PENDING,
                                                 DeviceState.DISABLED),
        lambda rt, d, who: revoke_device(rt, d, RevocationReason.unspecified, actor=who)),
    "quarantine": Action(
        "Quarantine", "The device may reach only its remediation topic; an incident is "
        "opened, the broker synced and its live session dropped. 'Release' brings it back.",
        (DeviceState.ACTIVE, DeviceState.PENDING),
        lambda rt, d, who: quarantine_devices(rt, Selector.parse([d]), actor=who,
                                              reason=f"quarantined from the web console by "
                                              f"{who}")),
    "release": Action(
        "Release", "The device returns to the state it had before its quarantine.",
        (DeviceState.QUARANTINED,),
        lambda rt, d, who: release_devices(rt, [d], actor=who)),
    "approve": Action(
        "Approve enrolment", "The device becomes pending: its next enrolment request gets a "
        "certificate.", (DeviceState.AWAITING_APPROVAL,),
        lambda rt, d, who: approve(rt, d, actor=who)),
    "retire": Action(
        "Retire", "The device is retired for good and every certificate it holds is revoked; "
        "this cannot be undone.", tuple(s for s in DeviceState if s is not DeviceState.RETIRED),
        lambda rt, d, who: change_state(rt, d, DeviceState.RETIRED, actor=who)),
}


def devices(ctx: Ctx) -> Response:
    q = ctx.query
    query = DeviceQuery.parse(prefix=q.get("q", ""), group=q.get("group", ""),
                              state=q.get("state", ""), role=q.get("role", ""),
                              attribute=q.get("attr", ""))
    after = q.get("after") or None
    result = search_devices(ctx.rt, query, after=after, limit=PAGE)
    filters = {k: v for k, v in (("q", query.prefix), ("group", query.group),
                                 ("state", query.state.value if query.state else None),
                                 ("role", query.role), ("attr", query.attribute_text)) if v}
    next_url = ("/ui/devices?" + urlencode({**filters, "after": result.next_after})
                if result.next_after else None)
    return page(ctx, "devices.html", result=result, query=query, next_url=next_url,
                states=[s.value for s in DeviceState], after=after,
                first_url="/ui/devices?" + urlencode(filters),
                fragment="_device_rows.html")


def _device_id(ctx: Ctx) -> str:
    return parse_device_id(str(ctx.params.get("device_id", "")))


def device_page(ctx: Ctx) -> Response:
    rt = ctx.rt
    device = get_device(rt, _device_id(ctx))
    direct, via, roles = device_roles(rt, device)
    certs = list_certificates(rt, device_id=device.id, limit=100)
    events = list(reversed(timeline(rt, device.id, limit=50)))
    decision = None
    action, resource = ctx.query.get("action", ""), ctx.query.get("resource", "")
    if action or resource:
        if not action or not resource or len(action) > 32 or len(resource) > 1024:
            raise InvalidInputError("an authorization check needs an action and a topic",
                                    hint="e.g. action publish, topic devices/ID/telemetry")
        decision = check(rt, device.id, action, resource)
    offered = {name: a for name, a in ACTIONS.items() if device.state in a.offered}
    return render(ctx, "device.html", device=device, direct=direct, via=via, roles=roles,
                  certs=certs, events=events, now=rt.now(), decision=decision,
                  action=action, resource=resource, actions=offered)


def _action(ctx: Ctx) -> tuple[str, Action]:
    name = ctx.query.get("do") or ctx.form.get("do", "")
    if name not in ACTIONS:
        raise InvalidInputError(f"unknown device action {name[:20]!r}",
                                hint="use " + ", ".join(ACTIONS))
    return name, ACTIONS[name]


def confirm(ctx: Ctx) -> Response:
    device = get_device(ctx.rt, _device_id(ctx))
    name, action = _action(ctx)
    return render(ctx, "confirm.html", device=device, action_name=name, action=action)


def perform(ctx: Ctx) -> Response:
    device_id = _device_id(ctx)
    name, action = _action(ctx)
    if ctx.form.get("confirm") != device_id:
        raise InvalidInputError("the action was not confirmed",
                                hint="type the device id on the confirmation page")
    action.run(ctx.rt, device_id, ctx.user.name)
    return RedirectResponse(f"/ui/devices/{quote(device_id)}?done={name}", status_code=303)
