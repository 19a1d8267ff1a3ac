"""The console's pages other than the devices': sign-in and sign-out, the overview, the
certificates and the alerts."""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import RedirectResponse, Response

from iotsec.app.access.console_sessions import end_session, sign_in
from iotsec.app.console.certificates import recently_revoked
from iotsec.app.console.compliance import latest_scores
from iotsec.app.console.overview import EXPIRY_WEEKS, OVERVIEW_TTL, crl_statuses, overview
from iotsec.app.monitor.alerts import get_alert, list_alerts, set_state
from iotsec.app.monitor.incident_records import list_incidents
from iotsec.app.pki.authorities import list_authorities
from iotsec.app.pki.cert_records import list_certificates
from iotsec.app.pki.issuance import revocation_urls
from iotsec.console.charts import weekly_bars
from iotsec.console.web import COOKIE, Ctx, page, render
from iotsec.errors import AuthError, ForbiddenError, InvalidInputError, ThrottledError
from iotsec.eventlog.alerts import AlertState

__all__ = ["alert_state", "alerts", "certificates", "home", "overview_page", "signin",
           "signin_form", "signout"]

_EXPIRING_DAYS = 30


def home(ctx: Ctx) -> Response:
    return RedirectResponse("/ui/overview", status_code=303)


def signin_form(ctx: Ctx) -> Response:
    return render(ctx, "signin.html")


def signin(ctx: Ctx) -> Response:
    token = ctx.form.get("token", "")
    previous = ctx.extra.get("secret", "")
    try:
        secret, session = sign_in(ctx.rt, token[:200], source=ctx.source)
    except ThrottledError as e:
        return render(ctx, "signin.html", status=429, error=str(e), hint=e.hint)
    except (AuthError, ForbiddenError) as e:
        return render(ctx, "signin.html", status=401, error="the API token is not valid",
                      hint=e.hint if isinstance(e, ForbiddenError)
                      else "paste an admin, operator or auditor token ('iotsec token create')")
    if previous:
        # A new sign-in in this browser ends the session it had (no stray live sessions).
        end_session(ctx.rt, previous, source=ctx.source)
    response = RedirectResponse("/ui/overview", status_code=303)
    response.set_cookie(COOKIE, secret, path="/", secure=True, httponly=True,
                        samesite="strict",
                        max_age=ctx.rt.settings.console_absolute_hours * 3600)
    del session
    return response


def signout(ctx: Ctx) -> Response:
    secret = ctx.extra.get("secret", "")
    end_session(ctx.rt, secret, source=ctx.source)
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def overview_page(ctx: Ctx) -> Response:
    """The overview. Its fleet figures come from the background (never computed while the
    page waits); while they are being computed the page asks for them again (htmx), and
    gets only the figures' fragment back."""
    held = overview(ctx.rt, fresh=ctx.query.get("fresh") == "1")
    view = held.value if held is not None else None
    now = ctx.rt.now()
    chart = (weekly_bars(view.expiring_per_week, view.computed_at,
                         f"Certificates expiring per week, next {EXPIRY_WEEKS} weeks")
             if view is not None else None)
    pending = held is None or held.refreshing
    values = {"view": view, "chart": chart, "now": now, "ttl": int(OVERVIEW_TTL),
              "pending": pending, "age": lambda t: _age(now - t),
              "scores": latest_scores(ctx.rt)}
    if ctx.htmx:
        return page(ctx, "overview.html", fragment="_overview_figures.html", **values)
    return page(ctx, "overview.html", crls=crl_statuses(ctx.rt), **values)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "in " if seconds < 0 else ""
    seconds = abs(seconds)
    text = (f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200
            else f"{seconds // 3600} h" if seconds < 172_800 else f"{seconds // 86400} days")
    return sign + text + ("" if sign else " ago")


def certificates(ctx: Ctx) -> Response:
    rt = ctx.rt
    now = rt.now()
    expiring = list_certificates(rt, expiring_within=timedelta(days=_EXPIRING_DAYS), limit=100)
    revoked = recently_revoked(rt, limit=50)
    cas = list_authorities(rt, counts=False)
    # Each issuing CA's certificates name that CA's CRL (ADR 0017); OCSP is one responder.
    urls = {ca.id: revocation_urls(rt.settings, ca.id) for ca in cas
            if ca.role == "issuing" and ca.state != "retired"}
    ocsp_url = next((u["ocsp_url"] for u in urls.values()), None)
    crls = crl_statuses(rt)
    return page(ctx, "certificates.html", expiring=expiring, revoked=revoked, cas=cas,
                urls=urls, ocsp_url=ocsp_url, crls=crls, now=now, days=_EXPIRING_DAYS,
                age=lambda t: _age(now - t))


def alerts(ctx: Ctx) -> Response:
    wanted = ctx.query.get("state", "")
    try:
        state = AlertState(wanted) if wanted else None
    except ValueError:
        raise InvalidInputError(f"unknown alert state {wanted[:20]!r}",
                                hint="use open, acknowledged or resolved") from None
    rows = list_alerts(ctx.rt, state=state, limit=200)
    return page(ctx, "alerts.html", alerts=rows, state=wanted,
                states=[s.value for s in AlertState], fragment="_alert_rows.html",
                incidents=list_incidents(ctx.rt, limit=50))


def alert_state(ctx: Ctx) -> Response:
    try:
        alert_id = int(ctx.params["alert_id"])
        target = {"acknowledged": AlertState.ACKNOWLEDGED,
                  "resolved": AlertState.RESOLVED}[ctx.form.get("to", "")]
    except (KeyError, ValueError):
        raise InvalidInputError("say which alert, and acknowledged or resolved") from None
    set_state(ctx.rt, alert_id, target, actor=ctx.user.name)
    if ctx.htmx:
        return render(ctx, "_alert_rows.html", alerts=[get_alert(ctx.rt, alert_id)])
    return RedirectResponse("/ui/alerts", status_code=303)
