"""Access-control routes: decisions, roles, groups, the policy document, API tokens and
security events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from iotsec.access.document import MAX_DOCUMENT_BYTES
from iotsec.access.engine import Decision
from iotsec.access.lint import lint_json
from iotsec.access.policy import Role, Rule
from iotsec.api.deps import AdminDep, AuditorDep, OperatorDep, RuntimeDep
from iotsec.api.schemas import MAX_INT64
from iotsec.app.access import decisions as access
from iotsec.app.access import policy
from iotsec.app.access import roles as role_service
from iotsec.app.access.api_tokens import Scope, TokenInfo, issue_token, list_tokens, revoke_token
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from iotsec.errors import InputTooLargeError
from iotsec.timeutil import parse_duration

router = APIRouter(prefix="/v1")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuthzIn(_Strict):
    device: str = Field(max_length=512)
    action: str = Field(max_length=64)
    resource: str = Field(max_length=70_000)
    cert_serial: str | None = Field(default=None, max_length=64)


class AuthzOut(BaseModel):
    allowed: bool
    decision: str
    role: str | None
    rule_index: int | None
    rule: str | None
    explanation: str


class RuleIO(_Strict):
    effect: str = Field(max_length=8)
    action: str = Field(max_length=64)
    resource: str = Field(max_length=1024)


class RoleIn(_Strict):
    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=1024)
    rules: list[RuleIO] = Field(max_length=256)


class RoleOut(BaseModel):
    name: str
    description: str
    rules: list[RuleIO]
    devices: int
    groups: list[str]


class GroupIn(_Strict):
    name: str = Field(max_length=128)
    roles: list[str] = Field(max_length=64)


class AssignIn(_Strict):
    roles: list[str] = Field(min_length=1, max_length=64)


class NamesOut(BaseModel):
    name: str
    roles: list[str]


class TokenIn(_Strict):
    name: str = Field(max_length=128)
    scope: str = Field(max_length=16)
    expires_in: str | None = Field(default=None, max_length=16, description="e.g. 90d")


class TokenOut(BaseModel):
    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    token: str | None = None

    @classmethod
    def of(cls, t: TokenInfo, token: str | None = None) -> TokenOut:
        return cls(id=t.id, name=t.name, scope=t.scope.value, created_at=t.created_at,
                   expires_at=t.expires_at, last_used_at=t.last_used_at, revoked=t.revoked,
                   token=token)


class EventOut(BaseModel):
    id: int | None
    at: datetime
    kind: str
    outcome: str
    actor: str | None
    source: str | None
    subject: str | None
    detail: dict[str, Any]


def _role_out(info: role_service.RoleInfo) -> RoleOut:
    return RoleOut(name=info.role.name, description=info.role.description,
                   rules=[RuleIO(effect=r.effect.value, action=r.action, resource=r.resource)
                          for r in info.role.rules],
                   devices=info.devices, groups=list(info.groups))


@router.post("/authz/check")
async def authz_check(body: AuthzIn, rt: RuntimeDep, _: AuditorDep) -> AuthzOut:
    d = await decide(rt, body.device, body.action, body.resource, body.cert_serial)
    return AuthzOut(**decision_out(d))


async def decide(rt: Runtime, device: str, action: str, resource: str,
                 cert_serial: str | None) -> Decision:
    """A decision, on the event loop when everything it needs is in memory (the compiled
    policy, the device's cached registry entry); otherwise in a worker thread, which reads
    the store."""
    cached = access.check_cached(rt, device, action, resource, cert_serial)
    if cached is not None:
        return cached
    return await run_in_threadpool(access.check, rt, device, action, resource, cert_serial)


def decision_out(d: Decision) -> dict[str, Any]:
    """The response body of a decision (also written by the decision fast path)."""
    return {"allowed": d.allowed, "decision": "allow" if d.allowed else "deny",
            "role": d.role, "rule_index": d.rule_index,
            "rule": d.rule.as_text() if d.rule else None, "explanation": d.explanation}


@router.get("/roles")
def roles(rt: RuntimeDep, _: AuditorDep) -> list[RoleOut]:
    return [_role_out(i) for i in role_service.list_roles(rt)]


@router.get("/roles/{name}")
def role(name: str, rt: RuntimeDep, _: AuditorDep) -> RoleOut:
    return _role_out(role_service.get_role(rt, name))


@router.post("/roles", status_code=201)
def add_role(body: RoleIn, rt: RuntimeDep, _: AdminDep) -> RoleOut:
    new = Role.build(body.name, [Rule.parse(r.effect, r.action, r.resource) for r in body.rules],
                     body.description)
    role_service.add_role(rt, new)
    return _role_out(role_service.get_role(rt, new.name))


@router.post("/groups")
def add_group(body: GroupIn, rt: RuntimeDep, _: AdminDep) -> NamesOut:
    return NamesOut(name=body.name, roles=role_service.add_group(rt, body.name, body.roles))


@router.post("/devices/{device_id}/roles")
def assign(device_id: str, body: AssignIn, rt: RuntimeDep, _: OperatorDep) -> NamesOut:
    return NamesOut(name=device_id, roles=role_service.assign_device(rt, device_id, body.roles))


@router.get("/policy", response_class=Response,
            responses={200: {"content": {"application/yaml": {}}}})
def export_policy(rt: RuntimeDep, _: AuditorDep) -> Response:
    return Response(policy.export_policy(rt), media_type="application/yaml")


@router.put("/policy")
async def apply_policy(request: Request, rt: RuntimeDep, _: AdminDep,
                       prune: bool = False, dry_run: bool = False) -> dict[str, Any]:
    data = await request.body()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputTooLargeError("the policy document is too large")
    result = policy.apply_policy(rt, data, prune=prune, dry_run=dry_run)
    return {"created": result.created, "updated": result.updated,
            "unchanged": result.unchanged, "removed": result.removed,
            "groups_changed": result.groups_changed, "dry_run": dry_run}


@router.get("/policy/lint")
def lint_policy(rt: RuntimeDep, _: AuditorDep) -> list[dict[str, Any]]:
    return [lint_json(f) for f in policy.lint_policy(rt)]


@router.get("/tokens")
def tokens(rt: RuntimeDep, _: AdminDep) -> list[TokenOut]:
    return [TokenOut.of(t) for t in list_tokens(rt)]


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, rt: RuntimeDep, _: AdminDep) -> TokenOut:
    info, token = issue_token(rt, body.name, Scope.parse(body.scope),
                              parse_duration(body.expires_in) if body.expires_in else None)
    return TokenOut.of(info, token)


@router.delete("/tokens/{token_id}")
def delete_token(token_id: str, rt: RuntimeDep, caller: AdminDep) -> TokenOut:
    return TokenOut.of(revoke_token(rt, token_id, caller=caller))


@router.get("/events")
def events(rt: RuntimeDep, _: AuditorDep,
           kind: Annotated[str | None, Query(max_length=64)] = None,
           limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
           before: Annotated[int | None, Query(ge=1, le=MAX_INT64)] = None,
           device: Annotated[str | None, Query(max_length=128)] = None) -> list[EventOut]:
    rt.events.flush()
    return [EventOut(id=e.id, at=e.at, kind=e.kind, outcome=e.outcome, actor=e.actor,
                     source=e.source, subject=e.subject, detail=dict(e.detail or {}))
            for e in list_events(rt.engine, kind=kind, limit=limit, before=before,
                                 actor=device)]
