"""Delivering alerts to the configured sinks, retried with backoff, never on a request's
path, and given up ("dead", with the last error, as an ``alert.delivery-dead`` event)
after :data:`~iotsec.eventlog.alerts.DELIVERY_ATTEMPTS` attempts.

A delivery is claimed before it is sent (its next attempt moved a lease ahead in one
conditional update), so several serving processes never send one alert twice at once.

- **webhook**: a JSON POST; https, or http to a loopback address only; redirects are not
  followed; the body is signed with ``IOTSEC_ALERT_WEBHOOK_SECRET`` (see
  :mod:`iotsec.eventlog.alerts`) and nothing is sent unsigned.
- **syslog**: one RFC 5424 message (facility "log audit", severity critical) over
  ``tls://`` (RFC 5425, certificate verified), or over ``tcp://`` (RFC 6587 octet counting)
  and ``udp://`` to a loopback address only (a local relay).
- **email**: a plain-text mail over SMTP with STARTTLS (certificate verified), required
  except to a loopback address; a login only after STARTTLS.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from iotsec.app.events import Event
from iotsec.app.monitor.alerts import Alert, get_alert
from iotsec.app.runtime import Runtime
from iotsec.errors import ConfigError
from iotsec.eventlog.alerts import DELIVERY_ATTEMPTS, backoff, sign_webhook, webhook_body
from iotsec.eventlog.export import ExportedEvent, to_syslog
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["DeliveryResult", "deliver_due", "syslog_message", "webhook_target"]

log = logging.getLogger("iotsec.alerts")
_LEASE = 60
_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivered: int
    failed: int
    dead: int


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    if parts.scheme == "http" and not _loopback(host):
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


def _payload(rt: Runtime, a: Alert) -> dict[str, Any]:
    return {"deployment": rt.settings.deployment, "alert": {
        "id": a.id, "rule": a.rule, "severity": a.severity.value, "subject": a.subject,
        "state": a.state.value, "summary": a.summary, "suggested": a.suggested,
        "evidence": a.evidence, "count": a.count, "created_at": a.created_at.isoformat(),
        "updated_at": a.updated_at.isoformat()}}


def _send_webhook(rt: Runtime, alert: Alert) -> None:
    url, secret, context = webhook_target(rt)
    body = webhook_body(_payload(rt, alert))
    sent_at = ts(rt.now())
    _post(url, body, {"content-type": "application/json",
                      "x-iotsec-timestamp": str(sent_at),
                      "x-iotsec-signature": sign_webhook(secret, sent_at, body),
                      "user-agent": "iotsec-alerts"}, context)


def syslog_message(rt: Runtime, alert: Alert) -> str:
    """The RFC 5424 message of ``alert``."""
    return to_syslog(ExportedEvent(
        id=alert.id, seq=None, at=ts(alert.updated_at), kind=f"alert.{alert.rule}",
        outcome=alert.severity.value, actor=None, source=None, subject=alert.subject,
        detail={"summary": alert.summary, "suggested": alert.suggested,
                "count": alert.count, "state": alert.state.value}, hash=None),
        hostname=socket.gethostname())


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{text[:80]!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _send_syslog(rt: Runtime, alert: Alert) -> None:
    target = rt.settings.alert_syslog
    if target is None:
        raise ConfigError("no syslog sink is configured (IOTSEC_ALERT_SYSLOG)")
    scheme, _, rest = target.partition("://")
    host, port = _split_host_port(rest)
    if scheme in ("udp", "tcp") and not _loopback(host):
        raise ConfigError(f"syslog over {scheme} to {host} would travel in clear",
                          hint="use tls://HOST:PORT (RFC 5425), or a relay on loopback")
    message = syslog_message(rt, alert).encode("utf-8")
    if scheme == "udp":
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                           socket.SOCK_DGRAM) as sock:
            sock.sendto(message, (host, port))
        return
    framed = str(len(message)).encode("ascii") + b" " + message  # RFC 6587 / RFC 5425
    with socket.create_connection((host, port), timeout=_TIMEOUT) as raw:
        if scheme == "tls":
            cafile = rt.settings.alert_syslog_ca
            context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(framed)
        else:
            raw.sendall(framed)


_ADDRESS = re.compile(r"^[^\s@<>]{1,64}@[A-Za-z0-9.-]{1,255}$")


def _send_email(rt: Runtime, alert: Alert) -> None:
    settings = rt.settings
    if settings.alert_smtp_url is None or not settings.alert_smtp_to:
        raise ConfigError("no mail sink is configured (IOTSEC_ALERT_SMTP_URL, _TO)")
    if settings.alert_smtp_from is None:
        raise ConfigError("alert mails need a sender (IOTSEC_ALERT_SMTP_FROM)")
    bad = [a for a in settings.alert_smtp_to if not _ADDRESS.fullmatch(a)]
    if bad:
        raise ConfigError(f"{bad[0][:80]!r} is not a mail address (IOTSEC_ALERT_SMTP_TO)")
    rest = settings.alert_smtp_url.removeprefix("smtp://")
    host, port = _split_host_port(rest if ":" in rest.rstrip("]") else f"{rest}:587")
    mail = EmailMessage()
    mail["From"] = settings.alert_smtp_from
    mail["To"] = ", ".join(settings.alert_smtp_to)
    # The subject is attacker-influenced text (a device id): one line, bounded.
    subject = " ".join(f"[iotsec {alert.severity.value}] {alert.summary}".split())[:200]
    mail["Subject"] = subject
    mail.set_content("\n".join((
        alert.summary, "", f"Suggested: {alert.suggested}", "",
        f"Alert {alert.id} ({alert.rule}) on {alert.subject}, seen {alert.count} time(s), "
        f"state {alert.state.value}.", "", json.dumps(alert.evidence, indent=2,
                                                       sort_keys=True, default=str))))
    with smtplib.SMTP(host, port, timeout=_TIMEOUT) as smtp:
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            cafile = settings.alert_smtp_ca
            context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            smtp.starttls(context=context)
            smtp.ehlo()
        elif not _loopback(host):
            raise ConfigError(f"the SMTP server {host} offers no STARTTLS: alerts are not "
                              "mailed in clear", hint="enable STARTTLS on the server")
        if settings.alert_smtp_user and settings.alert_smtp_password is not None:
            smtp.login(settings.alert_smtp_user,
                       settings.alert_smtp_password.get_secret_value())
        smtp.send_message(mail)


_SENDERS = {"webhook": _send_webhook, "syslog": _send_syslog, "email": _send_email}


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
        if row.sink not in _SENDERS or not _claim(rt, row.alert_id, row.sink,
                                                  row.next_attempt_at, now):
            continue
        error: str | None = None
        try:
            _SENDERS[row.sink](rt, get_alert(rt, row.alert_id))
        except ConfigError as exc:
            error = str(exc)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except smtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.smtp_code}"
        except (urllib.error.URLError, smtplib.SMTPException, OSError, ValueError) as exc:
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
            log.warning("alert %s: %s delivery failed (%s), attempt %d", row.alert_id,
                        row.sink, error, attempts)
    return DeliveryResult(delivered, failed, dead)
