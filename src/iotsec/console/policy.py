"""The console's policy page: roles and their rules, the lint findings, and a "who can do
what" explorer (device, action, topic: the decision and the rule that made it)."""

from __future__ import annotations

from starlette.responses import Response

from iotsec.app.access.decisions import check
from iotsec.app.console.policy import POLICY_TTL, policy_view
from iotsec.console.web import Ctx, page
from iotsec.errors import InvalidInputError
from iotsec.identity.registry import parse_device_id

__all__ = ["ACTIONS", "policy"]

ACTIONS = ("publish", "subscribe", "receive")


def policy(ctx: Ctx) -> Response:
    view = policy_view(ctx.rt, fresh=ctx.query.get("fresh") == "1")
    device = ctx.query.get("device", "").strip()
    action = ctx.query.get("action", "")
    topic = ctx.query.get("topic", "")
    decision = None
    if device or topic:
        if action not in ACTIONS or not topic or len(topic) > 1024:
            raise InvalidInputError("the explorer needs a device, an action and a topic",
                                    hint="e.g. device sensor-1, publish, devices/sensor-1/up")
        decision = check(ctx.rt, parse_device_id(device), action, topic)
    return page(ctx, "policy.html", view=view, ttl=int(POLICY_TTL), device=device,
                action=action, topic=topic, actions=ACTIONS, decision=decision)
