"""EMQX 5 hooks: HTTP authentication and authorization answered by iotsec's engine.

Both answers are explicit. Whatever cannot be established (a malformed body, an unknown or
disabled device, a certificate iotsec did not issue or has revoked, an unknown action, an
invalid topic, even a failure of the store) is answered ``{"result": "deny"}`` with HTTP
200: EMQX reads any other status, a timeout or an ``ignore`` as "no opinion" and moves on
to the next authenticator or authorizer, which would be fail-open if anything followed.

Authentication pins the very certificate the client presented when EMQX sends it
(``${cert_pem}``): its SHA-256 must be one iotsec issued to that device, not revoked, not
expired. The ``allow`` carries the device's ACL compiled from the policy (see
:mod:`iotsec.broker.emqx`) and ``expire_at`` = now + ``IOTSEC_EMQX_AUTHN_TTL`` seconds,
never beyond the certificate's notAfter: EMQX drops the connection then and the device
authenticates again, so a revocation or a policy change reaches live sessions within
that time. Authorization runs the same decision as ``iotsec authz check``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field
from sqlalchemy import select

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity, Role
from iotsec.access.quarantine import QUARANTINE_ROLE, quarantine_role_of
from iotsec.app.access import decisions as access
from iotsec.app.access import roles
from iotsec.app.access.decisions import current_policy, identity_for, quarantine_policy
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime, Slot
from iotsec.broker.emqx import (
    AUTHN_DENY,
    AUTHZ_ALLOW,
    AUTHZ_DENY,
    AuthnRequest,
    authn_allow,
    compile_acl,
    parse_authn_request,
    parse_authz_request,
)
from iotsec.config import EnvSettings
from iotsec.errors import IotsecError
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = [
    "SETTINGS", "EmqxSettings", "acl_preview", "authenticate", "authorize",
    "authorize_from_memory", "emqx_settings"
]

SETTINGS: Slot[EmqxSettings] = Slot("emqx.settings")
#: The roles by name, with the compiled policy they were read for.
_ROLES: Slot[tuple[CompiledPolicy, Mapping[str, Role]]] = Slot("emqx.roles")

log = logging.getLogger("iotsec.emqx")


class EmqxSettings(EnvSettings):
    """``IOTSEC_EMQX_*`` settings of the EMQX hooks."""

    env_prefix: ClassVar[str] = "IOTSEC_EMQX_"

    authn_ttl: int = Field(
        default=300, ge=30, le=86_400,
        description="seconds an EMQX authentication (and the ACL sent with it) stays valid; "
        "EMQX disconnects the client then, and it authenticates again")
    require_cert_pem: bool = Field(
        default=True,
        description="refuse an authentication request without the client certificate "
        "(${cert_pem}); turn off only for EMQX versions that cannot send it")


def emqx_settings(rt: Runtime) -> EmqxSettings:
    return rt.get_or_put(SETTINGS, EmqxSettings)


class _Refused(Exception):
    """An authentication refused for a reason recorded in the event (not shown to EMQX)."""


@dataclass(frozen=True, slots=True)
class _Certificate:
    serial: str
    not_after: int


def _presented(rt: Runtime, req: AuthnRequest, now: int) -> _Certificate:
    """The certificate the client connected with, as the store knows it."""
    c = m.certificates.c
    if req.cert_der is not None:
        digest = hashlib.sha256(req.cert_der).hexdigest()
        with reading(rt.engine) as conn:
            row = conn.execute(select(c.serial, c.device_id, c.kind, c.not_before, c.not_after,
                                      c.revoked_at).where(c.sha256 == digest)).first()
        if row is None or row.kind != "device":
            raise _Refused("certificate not issued by iotsec to a device")
        if row.device_id != req.username:
            raise _Refused("certificate issued to another device")
        if row.revoked_at is not None and row.revoked_at <= now:
            raise _Refused("certificate revoked")
        if not row.not_before <= now < row.not_after:
            raise _Refused("certificate expired or not yet valid")
        return _Certificate(str(row.serial), int(row.not_after))
    if emqx_settings(rt).require_cert_pem:
        raise _Refused("no client certificate in the request (cert_pem)")
    # Without the certificate itself, the device must hold at least one that is current;
    # the session then lasts no longer than the first of them to expire.
    with reading(rt.engine) as conn:
        ends = [int(v) for v in conn.execute(select(c.not_after).where(
            c.device_id == req.username, c.kind == "device", c.not_before <= now,
            c.not_after > now, (c.revoked_at.is_(None)) | (c.revoked_at > now))).scalars()]
    if not ends:
        raise _Refused("the device holds no current certificate")
    return _Certificate("", min(ends))


def _roles(rt: Runtime, policy: CompiledPolicy, identity: Identity) -> list[Role]:
    """The identity's roles as Role objects, in the engine's order (cached per policy)."""
    cached = rt.get(_ROLES)
    by_name: Mapping[str, Role]
    if cached is not None and cached[0] is policy:
        by_name = cached[1]
    else:
        with reading(rt.engine) as conn:
            loaded = roles.load_roles(conn)
        found = {r.name: r for r in loaded}
        # A quarantined device's policy names the quarantine role even when the store has
        # none: the built-in one then applies.
        found.setdefault(QUARANTINE_ROLE,
                         quarantine_role_of(loaded, rt.settings.quarantine_topic))
        by_name = found
        rt.put(_ROLES, (policy, by_name))
    return [by_name[n] for n in policy.roles_for(identity) if n in by_name]


def _authn_event(rt: Runtime, outcome: str, req: AuthnRequest | None, source: str | None,
                 detail: dict[str, Any]) -> None:
    rt.events.record(Event(rt.now(), "broker.authn", outcome,
                           actor=req.username if req else None,
                           source=(req.peerhost if req and req.peerhost else source),
                           subject="emqx", detail=detail))


def authenticate(rt: Runtime, body: bytes, source: str | None = None) -> dict[str, Any]:
    """Answer an EMQX HTTP authentication request (the response body, for HTTP 200)."""
    req: AuthnRequest | None = None
    try:
        req = parse_authn_request(body)
        now = ts(rt.now())
        cert = _presented(rt, req, now)
        identity, state = identity_for(rt, req.username, cert.serial or None)
        if state is DeviceState.QUARANTINED:
            # Connected, but given the quarantine role's rules only (its remediation topic).
            policy = quarantine_policy(rt)
        elif state is not DeviceState.ACTIVE:
            raise _Refused(f"device is {state.value}")
        else:
            policy = current_policy(rt)
            connect = policy.decide(identity, "connect", identity.device_id)
            if connect.rule is not None and not connect.allowed:
                raise _Refused(f"connect denied: {connect.explanation}")
        acl = compile_acl(identity, _roles(rt, policy, identity))
        expire_at = min(now + emqx_settings(rt).authn_ttl, cert.not_after)
        if expire_at <= now:
            raise _Refused("certificate expires now")
    except (_Refused, IotsecError) as exc:
        _authn_event(rt, "failure", req, source, {"reason": str(exc)[:200]})
        return dict(AUTHN_DENY)
    except Exception:  # the store failing must still be a deny, never an "ignore"
        log.exception("EMQX authentication failed unexpectedly; answering deny")
        return dict(AUTHN_DENY)
    _authn_event(rt, "success", req, source,
                 {"serial": cert.serial or None, "expire_at": expire_at,
                  "acl_rules": len(acl.rules), "acl_complete": sorted(acl.complete)})
    return authn_allow(acl, expire_at)


def authorize(rt: Runtime, body: bytes, source: str | None = None) -> dict[str, Any]:
    """Answer an EMQX HTTP authorization request with the engine's decision."""
    answer = _authorize(rt, body, source, from_memory=False)
    if answer is None:  # cannot happen: only a from-memory answer may be missing
        return dict(AUTHZ_DENY)
    return answer


def authorize_from_memory(rt: Runtime, body: bytes, source: str | None = None
                          ) -> dict[str, Any] | None:
    """:func:`authorize` if everything it needs is in memory (the compiled policy, the
    device's cached registry entry), else None: a serving process then calls
    :func:`authorize` off its event loop, as the ``/v1/authz/check`` route does."""
    return _authorize(rt, body, source, from_memory=True)


def _authorize(rt: Runtime, body: bytes, source: str | None, *, from_memory: bool
               ) -> dict[str, Any] | None:
    try:
        req = parse_authz_request(body)
    except IotsecError as exc:
        rt.events.record(Event(rt.now(), "broker.authz", "denied", source=source,
                               subject="emqx", detail={"reason": str(exc)[:200]}))
        return dict(AUTHZ_DENY)
    try:
        if from_memory:
            found = access.check_cached(rt, req.username, req.action, req.topic)
            if found is None:
                return None
            decision = found
        else:
            decision = access.check(rt, req.username, req.action, req.topic)
        reason = decision.explanation
        allowed = decision.allowed
    except IotsecError as exc:
        allowed, reason = False, str(exc)
    except Exception:
        log.exception("EMQX authorization failed unexpectedly; answering deny")
        allowed, reason = False, "internal error"
    if allowed:
        return dict(AUTHZ_ALLOW)
    # A client retrying a denied request repeats the same event: counted per flush interval.
    rt.events.record_repeated(Event(
        rt.now(), "broker.authz", "denied", actor=req.username, source=req.peerhost or source,
        subject=f"{req.action} {req.topic}", detail={"reason": reason[:200], "qos": req.qos}))
    return dict(AUTHZ_DENY)


def acl_preview(rt: Runtime, device_id: str) -> Sequence[Mapping[str, Any]]:
    """The ACL an authentication of ``device_id`` would carry now (for operators)."""
    identity, _ = identity_for(rt, device_id)
    policy = current_policy(rt)
    return compile_acl(identity, _roles(rt, policy, identity)).as_json()
