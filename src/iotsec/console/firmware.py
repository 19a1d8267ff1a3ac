"""The console's firmware page: releases, and update campaigns with their wave progress and
failure rates, paused, resumed or aborted by an operator."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from iotsec.app.ota.campaigns import (
    abort_campaign,
    list_campaigns,
    pause_campaign,
    resume_campaign,
)
from iotsec.app.ota.releases import list_releases
from iotsec.console.web import Ctx, page
from iotsec.errors import InvalidInputError
from iotsec.firmware.campaign import FINISHED

__all__ = ["campaign_control", "firmware"]


def firmware(ctx: Ctx) -> Response:
    campaigns = list_campaigns(ctx.rt)
    progress = {}
    for c in campaigns:
        total = c.totals
        finished = total.of(*FINISHED)
        progress[c.id] = {
            "done": finished, "size": total.size,
            "failure_rate": f"{100 * total.failures / finished:.1f} %" if finished else "-",
            "waves": [(i + 1, w.size, w.of(*FINISHED), w.failures)
                      for i, w in enumerate(c.waves)]}
    return page(ctx, "firmware.html", campaigns=campaigns, progress=progress,
                releases=list_releases(ctx.rt)[:100])


def campaign_control(ctx: Ctx) -> Response:
    try:
        campaign_id = int(ctx.params["campaign_id"])
    except (KeyError, ValueError):
        raise InvalidInputError("say which campaign") from None
    action = ctx.form.get("do", "")
    reason = ctx.form.get("reason", "").strip() or None
    who = ctx.user.name
    if action == "pause":
        pause_campaign(ctx.rt, campaign_id, actor=who, reason=reason)
    elif action == "resume":
        resume_campaign(ctx.rt, campaign_id, actor=who)
    elif action == "abort":
        if ctx.form.get("sure") != "yes":
            raise InvalidInputError("aborting a campaign was not confirmed",
                                    hint="tick the box that says devices not started are "
                                    "cancelled")
        abort_campaign(ctx.rt, campaign_id, actor=who, reason=reason)
    else:
        raise InvalidInputError(f"unknown campaign action {action[:20]!r}",
                                hint="use pause, resume or abort")
    return RedirectResponse("/ui/firmware", status_code=303)
