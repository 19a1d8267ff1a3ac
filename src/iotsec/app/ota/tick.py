"""Every running campaign evaluated at once: ``iotsec ota campaign tick`` (run it from cron
so that timeouts are noticed in a fleet that has gone quiet) and the loop a long-running
server runs instead."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select

from iotsec.app.ota.evaluation import evaluate_campaign, lock_campaign, record_changes
from iotsec.app.runtime import Runtime
from iotsec.firmware.campaign import CampaignState
from iotsec.store import models as m
from iotsec.store.db import reading, transaction

__all__ = ["tick", "tick_loop"]

log = logging.getLogger("iotsec.ota")


def tick(rt: Runtime) -> dict[int, list[str]]:
    """Evaluate every active or paused campaign (timeouts, waves, thresholds)."""
    with reading(rt.engine) as conn:
        ids = list(conn.execute(select(m.ota_campaigns.c.id).where(m.ota_campaigns.c.state.in_(
            [CampaignState.ACTIVE.value, CampaignState.PAUSED.value]))).scalars())
    done: dict[int, list[str]] = {}
    for campaign_id in ids:
        with transaction(rt.engine) as conn:
            done[campaign_id] = evaluate_campaign(conn, lock_campaign(conn, campaign_id),
                                                  rt.now())
        record_changes(rt, campaign_id, done[campaign_id], None)
    return done


def tick_loop(rt: Runtime, stop: threading.Event) -> None:
    """For a long-running server: :func:`tick` every ``campaign_tick_seconds``, so that
    devices that never report time out and waves advance without an outside scheduler.
    Errors are logged; the loop goes on until ``stop`` is set."""
    interval = rt.settings.campaign_tick_seconds
    while interval > 0 and not stop.wait(interval):
        try:
            tick(rt)
        except Exception:  # keep ticking; the failure is in the log
            log.exception("update campaign evaluation failed")
