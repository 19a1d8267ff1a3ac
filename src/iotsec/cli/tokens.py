"""``iotsec token``: operator API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app.access.api_tokens import Scope, issue_token, list_tokens, revoke_token
from iotsec.app.wire.access import TokenOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, NameArg
from iotsec.cli.output import console, emit_json, err_console, plural, table, when
from iotsec.timeutil import parse_duration

__all__ = ["create", "list_", "revoke", "token_app"]

token_app = typer.Typer(help="API tokens for operators and automation.", no_args_is_help=True)


@token_app.command("create")
def create(
    name: NameArg,
    scope: Annotated[str, typer.Option(
        "--scope", help="admin, operator, auditor or broker (EMQX hooks only).")] = "auditor",
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime, e.g. 90d.")
                       ] = "90d",
    as_json: JsonOpt = False,
) -> None:
    """Create a token (shown once; only its hash is stored)."""
    with runtime() as rt:
        info, token = issue_token(rt, name, Scope.parse(scope),
                                  parse_duration(expires) if expires else None, actor="cli")
    if as_json:
        emit_json(TokenOut.from_domain(info, token))
        return
    err_console.print(f"Created {info.scope.value} token {info.name} ({info.id}), expires "
                      f"{when(info.expires_at) or 'never'}. Shown once:", markup=False)
    console.print(token, markup=False, soft_wrap=True)


@token_app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List tokens (never their secrets)."""
    with runtime() as rt:
        found = list_tokens(rt)
    if as_json:
        emit_json([TokenOut.from_domain(t) for t in found])
        return
    table(plural(len(found), "token"), ["id", "name", "scope", "expires", "last used", "revoked"],
          [(t.id, t.name, t.scope.value, when(t.expires_at), when(t.last_used_at),
            "yes" if t.revoked else "") for t in found])


@token_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
           ) -> None:
    """Revoke a token at once."""
    with runtime() as rt:
        info = revoke_token(rt, token_id)
    if as_json:
        emit_json(TokenOut.from_domain(info))
    else:
        console.print(f"Revoked token {info.name} ({info.id})", markup=False)
