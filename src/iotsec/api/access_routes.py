"""Access-control routes: decisions, roles, groups, the policy document, API tokens and
security events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from iotsec.access.document import MAX_DOCUMENT_BYTES
from iotsec.access.lint import lint_json
from iotsec.access.policy import Role, Rule
from iotsec.api.decisions import decide
from iotsec.api.deps import AdminDep, AuditorDep, OperatorDep, RuntimeDep
from iotsec.api.schemas import MAX_INT64, AuthzIn
from iotsec.app.access import policy
from iotsec.app.access import roles as role_service
from iotsec.app.access.api_tokens import Scope, issue_token, list_tokens, revoke_token
from iotsec.app.events import list_events
from iotsec.app.wire.access import (
    DecisionOut,
    EventOut,
    NamesOut,
    PolicyAppliedOut,
    RoleOut,
    TokenOut,
)
from iotsec.errors import InputTooLargeError
from iotsec.timeutil import parse_duration, parse_moment

__all__ = [
    "AssignIn", "AuthzIn", "GroupIn", "RoleIn", "RuleIO", "TokenIn", "add_group", "add_role",
    "apply_policy", "assign", "authz_check", "create_token", "delete_token", "events",
    "export_policy", "lint_policy", "role", "roles", "router", "tokens"
]

router = APIRouter(prefix="/v1")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleIO(_Strict):
    effect: str = Field(max_length=8)
    action: str = Field(max_length=64)
    resource: str = Field(max_length=1024)


class RoleIn(_Strict):
    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=1024)
    rules: list[RuleIO] = Field(max_length=256)


class GroupIn(_Strict):
    name: str = Field(max_length=128)
    roles: list[str] = Field(max_length=64)


class AssignIn(_Strict):
    roles: list[str] = Field(min_length=1, max_length=64)


class TokenIn(_Strict):
    name: str = Field(max_length=128)
    scope: str = Field(max_length=16)
    expires_in: str | None = Field(default=None, max_length=16, description="e.g. 90d")


@router.post("/authz/check")
async def authz_check(body: AuthzIn, rt: RuntimeDep, _: AuditorDep) -> DecisionOut:
    d = await decide(rt, body.device, body.action, body.resource, body.cert_serial)
    return DecisionOut.from_domain(d)




@router.get("/roles")
def roles(rt: RuntimeDep, _: AuditorDep) -> list[RoleOut]:
    return [RoleOut.from_domain(i) for i in role_service.list_roles(rt)]


@router.get("/roles/{name}")
def role(name: str, rt: RuntimeDep, _: AuditorDep) -> RoleOut:
    return RoleOut.from_domain(role_service.get_role(rt, name))


@router.post("/roles", status_code=201)
def add_role(body: RoleIn, rt: RuntimeDep, caller: AdminDep) -> RoleOut:
    new = Role.build(body.name, [Rule.parse(r.effect, r.action, r.resource) for r in body.rules],
                     body.description)
    role_service.add_role(rt, new, actor=caller.name)
    return RoleOut.from_domain(role_service.get_role(rt, new.name))


@router.post("/groups")
def add_group(body: GroupIn, rt: RuntimeDep, caller: AdminDep) -> NamesOut:
    return NamesOut(name=body.name, roles=role_service.add_group(rt, body.name, body.roles,
                                                                 actor=caller.name))


@router.post("/devices/{device_id}/roles")
def assign(device_id: str, body: AssignIn, rt: RuntimeDep, caller: OperatorDep) -> NamesOut:
    return NamesOut(name=device_id, roles=role_service.assign_device(rt, device_id, body.roles,
                                                                     actor=caller.name))


@router.get("/policy", response_class=Response,
            responses={200: {"content": {"application/yaml": {}}}})
def export_policy(rt: RuntimeDep, _: AuditorDep) -> Response:
    return Response(policy.export_policy(rt), media_type="application/yaml")


@router.put("/policy")
async def apply_policy(request: Request, rt: RuntimeDep, caller: AdminDep,
                       prune: bool = False, dry_run: bool = False) -> PolicyAppliedOut:
    data = await request.body()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputTooLargeError("the policy document is too large")
    result = policy.apply_policy(rt, data, prune=prune, dry_run=dry_run, actor=caller.name)
    return PolicyAppliedOut.from_domain(result, dry_run=dry_run)


@router.get("/policy/lint")
def lint_policy(rt: RuntimeDep, _: AuditorDep) -> list[dict[str, Any]]:
    return [lint_json(f) for f in policy.lint_policy(rt)]


@router.get("/tokens")
def tokens(rt: RuntimeDep, _: AdminDep) -> list[TokenOut]:
    return [TokenOut.from_domain(t) for t in list_tokens(rt)]


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, rt: RuntimeDep, caller: AdminDep) -> TokenOut:
    info, token = issue_token(rt, body.name, Scope.parse(body.scope),
                              parse_duration(body.expires_in) if body.expires_in else None,
                              actor=caller.name)
    return TokenOut.from_domain(info, token)


@router.delete("/tokens/{token_id}")
def delete_token(token_id: str, rt: RuntimeDep, caller: AdminDep) -> TokenOut:
    return TokenOut.from_domain(revoke_token(rt, token_id, caller=caller))


@router.get("/events")
def events(rt: RuntimeDep, _: AuditorDep,
           kind: Annotated[str | None, Query(max_length=64)] = None,
           limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
           before: Annotated[int | None, Query(ge=1, le=MAX_INT64)] = None,
           device: Annotated[str | None, Query(max_length=128)] = None,
           since: Annotated[str | None, Query(
               max_length=40, description="a duration back (2h, 7d) or an ISO 8601 time")
                            ] = None,
           until: Annotated[str | None, Query(max_length=40)] = None) -> list[EventOut]:
    rt.events.flush()
    now = rt.now()
    return [EventOut.from_domain(e)
            for e in list_events(rt.engine, kind=kind, limit=limit, before=before,
                                 actor=device,
                                 since=parse_moment(since, now) if since else None,
                                 until=parse_moment(until, now) if until else None)]
