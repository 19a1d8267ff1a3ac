"""Delivering alerts to the webhook sink: signed, retried with backoff, never on a request's
path, and given up ("dead", with the last error, as an ``alert.delivery-dead`` event)
after :data:`~iotsec.eventlog.alerts.DELIVERY_ATTEMPTS` attempts.

A delivery is claimed before it is sent (its next attempt moved a lease ahead in one
conditional update), so several serving processes never send one alert twice at once.
Only https is used, except to a loopback address; redirects are not followed; the body is
signed with ``IOTSEC_ALERT_WEBHOOK_SECRET`` (see :mod:`iotsec.eventlog.alerts`) and nothing
is sent unsigned.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from iotsec.app.events import Event
from iotsec.app.monitor.alerts import get_alert
from iotsec.app.runtime import Runtime
from iotsec.errors import ConfigError
from iotsec.eventlog.alerts import DELIVERY_ATTEMPTS, backoff, sign_webhook, webhook_body
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["DeliveryResult", "deliver_due", "webhook_target"]

log = logging.getLogger("iotsec.alerts")
_LEASE = 60
_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: int
    failed: int
    dead: int


def webhook_target(rt: Runtime) -> tuple[str, bytes, ssl.SSLContext | None]:
    """The webhook URL, its secret and TLS context, or a :class:`ConfigError` that says
    what to set."""
    settings = rt.settings
    url = settings.alert_webhook_url
    if url is None:
        raise ConfigError("no alert webhook is configured (IOTSEC_ALERT_WEBHOOK_URL)")
    if settings.alert_webhook_secret is None:
        raise ConfigError("the alert webhook has no secret: alerts are never sent unsigned",
                          hint="set IOTSEC_ALERT_WEBHOOK_SECRET (at least 16 characters)")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "http":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(f"the alert webhook {url[:80]} is plain http to another host",
                              hint="use https (http is allowed to a loopback address only)")
    context = None
    if parts.scheme == "https":
        cafile = settings.alert_webhook_ca
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    secret = settings.alert_webhook_secret.get_secret_value().encode("utf-8")
    return url, secret, context


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post(url: str, body: bytes, headers: dict[str, str],
          context: ssl.SSLContext | None) -> None:
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(
        context=context) if context else urllib.request.HTTPHandler())
    # The scheme is http or https: the setting's pattern and webhook_target allow no other.
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310
    with opener.open(request, timeout=_TIMEOUT) as response:
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "not 2xx", response.headers,
                                         None)


def _payload(rt: Runtime, alert_id: int) -> dict[str, Any]:
    a = get_alert(rt, alert_id)
    return {"deployment": rt.settings.deployment, "alert": {
        "id": a.id, "rule": a.rule, "severity": a.severity.value, "subject": a.subject,
        "state": a.state.value, "summary": a.summary, "suggested": a.suggested,
        "evidence": a.evidence, "count": a.count, "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat()}}


def _claim(rt: Runtime, alert_id: int, sink: str, seen: int, now: int) -> bool:
    d = m.alert_deliveries.c
    with transaction(rt.engine) as conn:
        claimed = conn.execute(update(m.alert_deliveries).where(
            d.alert_id == alert_id, d.sink == sink, d.state == "pending",
            d.next_attempt_at == seen).values(next_attempt_at=now + _LEASE)).rowcount
    return bool(claimed)


def deliver_due(rt: Runtime, *, limit: int = 100) -> DeliveryResult:
    """Send every delivery that is due (at most ``limit``); returns what happened."""
    now = ts(rt.now())
    d = m.alert_deliveries.c
    with reading(rt.engine) as conn:
        due = conn.execute(select(d.alert_id, d.sink, d.attempts, d.next_attempt_at).where(
            d.state == "pending", d.next_attempt_at <= now)
            .order_by(d.next_attempt_at).limit(limit)).all()
    delivered = failed = dead = 0
    for row in due:
        if row.sink != "webhook" or not _claim(rt, row.alert_id, row.sink,
                                               row.next_attempt_at, now):
            continue
        error: str | None = None
        try:
            url, secret, context = webhook_target(rt)
            body = webhook_body(_payload(rt, row.alert_id))
            sent_at = ts(rt.now())
            _post(url, body, {"content-type": "application/json",
                              "x-iotsec-timestamp": str(sent_at),
                              "x-iotsec-signature": sign_webhook(secret, sent_at, body),
                              "user-agent": "iotsec-alerts"}, context)
        except ConfigError as exc:
            error = str(exc)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"{type(exc).__name__}: {reason}"[:300]
        attempts = row.attempts + 1
        moment = rt.now()
        with transaction(rt.engine) as conn:
            values: dict[str, Any] = {"attempts": attempts, "updated_at": ts(moment),
                                      "last_error": error}
            if error is None:
                values["state"] = "delivered"
                delivered += 1
            elif attempts >= DELIVERY_ATTEMPTS:
                values["state"] = "dead"
                dead += 1
                rt.events.record_in(conn, Event(moment, "alert.delivery-dead", "failure",
                                                subject=str(row.alert_id), detail={
                                                    "sink": row.sink, "attempts": attempts,
                                                    "error": error}))
            else:
                values["next_attempt_at"] = ts(moment) + backoff(attempts)
                failed += 1
            conn.execute(update(m.alert_deliveries).where(
                d.alert_id == row.alert_id, d.sink == row.sink).values(values))
        if error is not None:
            log.warning("alert %s: webhook delivery failed (%s), attempt %d", row.alert_id,
                        error, attempts)
    return DeliveryResult(delivered, failed, dead)
