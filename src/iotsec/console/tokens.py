"""The console's API token page: the tokens (no secret: only their digests are stored), and
for an admin a new token, shown once in the answer to the form that made it (every console
page is sent ``Cache-Control: no-store``), never again."""

from __future__ import annotations

from datetime import timedelta

from starlette.responses import Response

from iotsec.app.access.api_tokens import Scope, issue_token, list_tokens
from iotsec.console.web import Ctx, render
from iotsec.errors import InvalidInputError

__all__ = ["create", "tokens"]

_SCOPES = [s.value for s in Scope if s in (Scope.ADMIN, Scope.OPERATOR, Scope.AUDITOR)]


def tokens(ctx: Ctx) -> Response:
    return render(ctx, "tokens.html", tokens=list_tokens(ctx.rt), scopes=_SCOPES,
                  can_admin=ctx.may(Scope.ADMIN))


def create(ctx: Ctx) -> Response:
    name = ctx.form.get("name", "")
    scope_text = ctx.form.get("scope", "")
    if scope_text not in _SCOPES:
        raise InvalidInputError(f"unknown token scope {scope_text[:20]!r}",
                                hint="use " + ", ".join(_SCOPES))
    days_text = ctx.form.get("days", "")
    if not days_text.isdigit() or not 1 <= int(days_text) <= 3650:
        raise InvalidInputError("a token expires in 1 to 3650 days",
                                hint="give the number of days")
    info, secret = issue_token(ctx.rt, name, Scope(scope_text), timedelta(days=int(days_text)),
                               actor=ctx.user.name)
    return render(ctx, "token_created.html", info=info, secret=secret)
