"""EMQX 5 HTTP authentication and authorization: the request bodies EMQX sends and the
ACL iotsec returns with an ``allow`` (pure: bytes and policy objects in, values out).

EMQX builds each request body from the template configured in ``emqx.conf`` (see
:mod:`iotsec.broker.emqx_conf`); every placeholder is rendered as a JSON string, e.g.
``{"username": "${username}", "topic": "${topic}", "action": "${action}"}`` becomes
``{"username": "dev-1", "topic": "devices/dev-1/t", "action": "publish"}``. A placeholder
EMQX has no value for is rendered as an empty string (or, in some versions, as
``"undefined"``), so both are read as "absent".

The ACL returned with an authentication ``allow`` is EMQX's "new format" (5.5+): a list of
``{"permission", "action", "topic" | "topics"}`` rules that EMQX checks *in order, first
match wins*, before any authorizer; a request that matches no rule passes through to the
authorizers (here: the HTTP authorizer, i.e. the same engine). EMQX matches a rule's
filter against the requested topic with ``emqx_topic:match/2``: for a publish that is MQTT
matching of a name; for a subscribe the requested *filter* is matched as if it were a
name, so its ``+``/``#`` only meet a ``+``/``#`` in the rule. That is looser than iotsec's
subscribe rule (every topic the filter can match must be allowed, and no deny may
overlap it) in two ways, and the compiler below keeps the ACL exact by construction:

- a deny rule catches fewer wildcard subscriptions than "overlaps": harmless when no
  later allow can match them either (then the final deny-all or the engine decides);
- an allow ``a/+`` (or ``a/+/#``) lets EMQX grant ``a/#``, which reaches ``a`` and
  ``a/x/y`` as well. An allow of that shape, or one that a deny rule overlaps, is left
  out, and then subscriptions are not closed by the final deny-all: they fall through to
  the HTTP authorizer, which runs the engine itself.

Publishes are exact: deny rules, then allow rules, then ``deny all #``. Topics that start
with ``$`` are never matched by a leading wildcard (MQTT 4.7.2), so they always reach the
HTTP authorizer, which decides them with the engine.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iotsec.access.engine import variable_values
from iotsec.access.policy import Effect, Identity, Role, Rule, check_identity_value
from iotsec.access.topics import TopicError, TopicFilter, overlaps_levels, parse_topic_name
from iotsec.errors import EmqxRequestError

__all__ = [
    "AUTHN_DENY", "AUTHZ_ALLOW", "AUTHZ_DENY", "DENY_ALL", "MAX_ACL_RULES", "MAX_CERT_FIELD",
    "MAX_EXPANSION", "MAX_FIELD", "MAX_REQUEST_BYTES", "AclRule", "AuthnRequest", "AuthzRequest",
    "EmqxAcl", "authn_allow", "compile_acl", "emqx_match", "parse_authn_request",
    "parse_authz_request", "parse_cert"
]

#: Largest request body accepted from EMQX (a certificate in PEM is the largest field).
MAX_REQUEST_BYTES = 16 * 1024
MAX_FIELD = 512
MAX_CERT_FIELD = 12 * 1024
#: A rule whose variables expand to more concrete filters than this is not put in the ACL.
MAX_EXPANSION = 64
#: An ACL longer than this is cut short (and then defers to the HTTP authorizer).
MAX_ACL_RULES = 512
_ABSENT = ("", "undefined", "null")
_ACTIONS = ("publish", "subscribe")


# --- requests ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthnRequest:
    """What EMQX sends when a client connects (``peer_cert_as_username = cn``)."""

    username: str
    clientid: str | None
    peerhost: str | None
    cert_common_name: str | None
    cert_subject: str | None
    cert_der: bytes | None


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    """What EMQX sends for a publish or a subscription."""

    username: str
    clientid: str | None
    peerhost: str | None
    action: str  # publish | subscribe
    topic: str
    qos: int | None
    retain: bool | None


def _object(body: bytes) -> Mapping[str, Any]:
    if not isinstance(body, bytes | bytearray):
        raise EmqxRequestError("the request body is not bytes")
    if len(body) > MAX_REQUEST_BYTES:
        raise EmqxRequestError(f"the request body is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise EmqxRequestError("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise EmqxRequestError("the request body is not a JSON object")
    return data


def _text(data: Mapping[str, Any], key: str, *, limit: int = MAX_FIELD) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EmqxRequestError(f"field {key!r} is not a string")
    text = str(value)
    if len(text) > limit:
        raise EmqxRequestError(f"field {key!r} is longer than {limit} characters")
    if "\x00" in text:
        raise EmqxRequestError(f"field {key!r} contains a NUL character")
    return None if text in _ABSENT else text


def _required(data: Mapping[str, Any], key: str, *, limit: int = MAX_FIELD) -> str:
    value = _text(data, key, limit=limit)
    if value is None:
        raise EmqxRequestError(f"field {key!r} is missing or empty")
    return value


def _identity_fields(data: Mapping[str, Any]) -> tuple[str, str | None]:
    username = _required(data, "username")
    clientid = _text(data, "clientid")
    # Both are the certificate's CN (peer_cert_as_username / peer_cert_as_clientid = cn);
    # a difference means the broker is not configured as iotsec renders it.
    if clientid is not None and clientid != username:
        raise EmqxRequestError("clientid and username differ (both must be the "
                               "certificate's common name)")
    return username, clientid


def parse_cert(text: str) -> bytes:
    """The DER of ``${cert_pem}``: EMQX renders the client certificate as base64 DER;
    a PEM block is accepted as well."""
    body = text.strip()
    if body.startswith("-----BEGIN CERTIFICATE-----"):
        lines = [ln for ln in body.splitlines() if ln and not ln.startswith("-----")]
        body = "".join(lines)
    try:
        der = base64.b64decode(body.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        raise EmqxRequestError("cert_pem is neither base64 DER nor a PEM certificate") from None
    if len(der) < 64 or der[0] != 0x30:
        raise EmqxRequestError("cert_pem does not hold a DER certificate")
    return der


def parse_authn_request(body: bytes) -> AuthnRequest:
    """Parse an authentication request; raise :class:`EmqxRequestError` if malformed."""
    data = _object(body)
    username, clientid = _identity_fields(data)
    cn = _text(data, "cert_common_name")
    if cn is not None and cn != username:
        raise EmqxRequestError("the certificate's common name is not the username")
    pem = _text(data, "cert_pem", limit=MAX_CERT_FIELD)
    return AuthnRequest(username=username, clientid=clientid, peerhost=_text(data, "peerhost"),
                        cert_common_name=cn, cert_subject=_text(data, "cert_subject"),
                        cert_der=parse_cert(pem) if pem is not None else None)


def parse_authz_request(body: bytes) -> AuthzRequest:
    """Parse an authorization request; raise :class:`EmqxRequestError` if malformed
    (including an action other than publish/subscribe or an invalid topic)."""
    data = _object(body)
    username, clientid = _identity_fields(data)
    action = _required(data, "action", limit=16)
    if action not in _ACTIONS:
        raise EmqxRequestError(f"unknown action {action[:16]!r}")
    topic = _required(data, "topic", limit=65_535)
    try:
        if action == "publish":
            parse_topic_name(topic)
        else:
            TopicFilter.parse(topic)
    except TopicError as exc:
        raise EmqxRequestError(f"invalid topic: {exc}") from None
    qos_text = _text(data, "qos", limit=16)
    if qos_text is not None and qos_text not in ("0", "1", "2"):
        raise EmqxRequestError("qos is not 0, 1 or 2")
    retain_text = _text(data, "retain", limit=16)
    if retain_text is not None and retain_text not in ("true", "false", "0", "1"):
        raise EmqxRequestError("retain is not true or false")
    return AuthzRequest(username=username, clientid=clientid, peerhost=_text(data, "peerhost"),
                        action=action, topic=topic,
                        qos=int(qos_text) if qos_text is not None else None,
                        retain=None if retain_text is None else retain_text in ("true", "1"))


# --- the ACL -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AclRule:
    permission: str  # allow | deny
    action: str  # publish | subscribe | all
    topics: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        if len(self.topics) == 1:
            return {"permission": self.permission, "action": self.action,
                    "topic": self.topics[0]}
        return {"permission": self.permission, "action": self.action,
                "topics": list(self.topics)}


@dataclass(frozen=True, slots=True)
class EmqxAcl:
    """The rules, and which actions they decide completely (the rest reach the HTTP
    authorizer)."""

    rules: tuple[AclRule, ...]
    complete: frozenset[str]

    def as_json(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in self.rules]

    def first_match(self, action: str, topic: str) -> tuple[int, AclRule, str] | None:
        """The rule EMQX applies to ``action`` on ``topic`` (its index and the matching
        filter), or None: no rule matches, and EMQX asks the authorizers."""
        for index, rule in enumerate(self.rules):
            if rule.action not in ("all", action):
                continue
            for flt in rule.topics:
                if (topic == flt[3:]) if flt.startswith("eq ") else emqx_match(topic, flt):
                    return index, rule, flt
        return None


def emqx_match(name: str, flt: str) -> bool:
    """``emqx_topic:match/2``. For a subscription EMQX passes the requested *filter* as
    ``name``, so its ``+`` and ``#`` meet only a ``+`` (or a trailing ``#``) in ``flt``."""
    if name[:1] == "$" and flt[:1] in ("+", "#"):
        return False
    names, levels = name.split("/"), flt.split("/")
    for i, level in enumerate(levels):
        if level == "#" and i == len(levels) - 1:
            return True
        if i >= len(names) or level not in ("+", names[i]):
            return False
    return len(levels) == len(names)


DENY_ALL = "#"


def _expand(rule: Rule, identity: Identity, values: Mapping[str, tuple[str, ...]]
            ) -> tuple[str, ...] | None:
    """The concrete filters a rule stands for, for this identity; ``()`` if a variable
    has no valid value (the rule matches nothing), None if there are too many or one
    cannot be written in an EMQX ACL."""
    choices: list[tuple[str, ...]] = []
    for i, level in enumerate(rule.levels):
        if i in rule.variables:
            name = level[2:-1]
            if name == "device.id":
                valid = check_identity_value(identity.device_id)
                options: tuple[str, ...] = (valid,) if valid else ()
            else:
                options = values[name]
            if not options:
                return ()
            choices.append(options)
        else:
            choices.append((level,))
    if math.prod(map(len, choices)) > MAX_EXPANSION:
        return None
    topics = tuple("/".join(combo) for combo in itertools.product(*choices))
    # EMQX reads "${...}" in an ACL topic as a placeholder and "eq " as a prefix.
    if any("${" in t or t.startswith("eq ") for t in topics):
        return None
    return topics


def _loose(levels: Sequence[str]) -> bool:
    """Does EMQX grant more than iotsec for this allow filter? A '+' that is the last
    level, or is followed only by '#', also matches a requested '#' there."""
    for i, level in enumerate(levels):
        if level == "+" and (i == len(levels) - 1 or tuple(levels[i + 1:]) == ("#",)):
            return True
    return False


def compile_acl(identity: Identity, roles: Sequence[Role]) -> EmqxAcl:
    """The EMQX ACL equivalent to the engine for ``identity`` holding ``roles`` (in the
    order the engine sees them); see the module documentation for the construction."""
    values = variable_values(identity)
    concrete: dict[tuple[Effect, str], list[str]] = {
        (e, a): [] for e in Effect for a in _ACTIONS}
    complete = {"publish", "subscribe"}
    for role in roles:
        for rule in role.rules:
            if rule.action not in _ACTIONS:
                continue  # connect is decided at authentication; receive has no EMQX check
            topics = _expand(rule, identity, values)
            if topics is None:
                complete.discard(rule.action)
                continue
            bucket = concrete[(rule.effect, rule.action)]
            bucket.extend(t for t in topics if t not in bucket)
    rules: list[AclRule] = []
    for action in _ACTIONS:
        if action in complete and concrete[(Effect.DENY, action)]:
            rules.append(AclRule("deny", action, tuple(concrete[(Effect.DENY, action)])))
    sub_denies = [TopicFilter.parse(t).levels for t in concrete[(Effect.DENY, "subscribe")]]
    for action in _ACTIONS:
        if action not in complete:
            continue
        allowed = []
        for topic in concrete[(Effect.ALLOW, action)]:
            if action == "subscribe":
                levels = TopicFilter.parse(topic).levels
                if _loose(levels) or any(overlaps_levels(d, levels) for d in sub_denies):
                    complete.discard(action)
                    continue
            allowed.append(topic)
        if allowed:
            rules.append(AclRule("allow", action, tuple(allowed)))
    if len(rules) > MAX_ACL_RULES or sum(len(r.topics) for r in rules) > MAX_ACL_RULES:
        return EmqxAcl(rules=(), complete=frozenset())
    if complete == {"publish", "subscribe"}:
        rules.append(AclRule("deny", "all", (DENY_ALL,)))
    elif complete:
        rules.append(AclRule("deny", next(iter(complete)), (DENY_ALL,)))
    return EmqxAcl(rules=tuple(rules), complete=frozenset(complete))


# --- responses -----------------------------------------------------------------------


def authn_allow(acl: EmqxAcl, expire_at: int) -> dict[str, Any]:
    """The body of an authentication ``allow`` (never a superuser)."""
    return {"result": "allow", "is_superuser": False, "expire_at": expire_at,
            "acl": acl.as_json()}


AUTHN_DENY: Mapping[str, Any] = {"result": "deny", "is_superuser": False}
AUTHZ_ALLOW: Mapping[str, Any] = {"result": "allow"}
AUTHZ_DENY: Mapping[str, Any] = {"result": "deny"}
