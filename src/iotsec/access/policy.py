"""Roles and rules: the pure policy model.

A rule is ``effect`` (allow | deny), ``action`` and ``resource``. MQTT actions
(``connect``, ``publish``, ``subscribe``, ``receive``) take a topic filter; API actions
(``namespace:verb`` such as ``firmware:download``) take a resource pattern with the same
syntax ('/'-separated levels, ``+`` and ``#``). A level may instead be one policy variable,
substituted per request from the authenticated identity:

``${device.id}``, ``${device.group}``, ``${device.attr.<name>}``, ``${cert.cn}``,
``${cert.serial}``.

A variable is a whole level, never part of one, so that a value can never be spliced into
a wildcard; and a value that is empty or contains ``+``, ``#`` or ``/`` makes the rule
match nothing for that request.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from iotsec.access.topics import TopicError, TopicFilter
from iotsec.errors import InvalidInputError, PolicyError

MQTT_ACTIONS = ("connect", "publish", "subscribe", "receive")
_API_ACTION = re.compile(r"^[a-z][a-z0-9-]{0,30}:[a-z][a-z0-9-]{0,31}$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"^(device\.id|device\.group|cert\.cn|cert\.serial|"
                       r"device\.attr\.[A-Za-z_][A-Za-z0-9_.-]{0,63})$")
MAX_RULES_PER_ROLE = 256
MAX_RESOURCE = 1024
MAX_DESCRIPTION = 1024


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


def parse_action(text: str) -> str:
    if text in MQTT_ACTIONS or _API_ACTION.fullmatch(text):
        return text
    raise PolicyError(f"unknown action {text[:40]!r}",
                      hint="use connect, publish, subscribe, receive, or an API action "
                      "such as firmware:download")


def parse_role_name(text: str) -> str:
    if not isinstance(text, str) or not _ROLE_NAME.fullmatch(text):
        raise PolicyError(f"role name {str(text)[:70]!r} is not valid",
                          hint="role names are 1-64 of A-Z a-z 0-9 . _ : - "
                          "and start with a letter or digit")
    return text


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated rule. ``levels`` are the resource's levels; a level that is a
    variable is kept as its name prefixed with ``$`` + ``{`` (e.g. ``${device.id}``)."""

    effect: Effect
    action: str
    resource: str
    levels: tuple[str, ...]
    variables: tuple[int, ...]  # positions of the variable levels

    @classmethod
    def parse(cls, effect: str, action: str, resource: str) -> Rule:
        try:
            eff = Effect(effect)
        except ValueError:
            raise PolicyError(f"unknown effect {str(effect)[:20]!r}",
                              hint="a rule's effect is allow or deny") from None
        act = parse_action(action)
        if not isinstance(resource, str) or not resource or len(resource) > MAX_RESOURCE:
            raise PolicyError(f"the resource of a rule must be 1 to {MAX_RESOURCE} characters")
        levels = tuple(resource.split("/"))
        variables = []
        probe = []
        for i, level in enumerate(levels):
            found = _VAR.findall(level)
            if found or "${" in level:
                if not (len(found) == 1 and level == f"${{{found[0]}}}"):
                    raise PolicyError(
                        f"resource {resource!r}: a variable must be a whole level "
                        f"(found {level!r})", hint="write e.g. devices/${device.id}/#")
                if not _VAR_NAME.fullmatch(found[0]):
                    raise PolicyError(
                        f"resource {resource!r}: unknown variable ${{{found[0]}}}",
                        hint="variables: ${device.id}, ${device.group}, "
                        "${device.attr.<name>}, ${cert.cn}, ${cert.serial}")
                variables.append(i)
                probe.append("v")
            else:
                probe.append(level)
        try:
            TopicFilter.parse("/".join(probe))
        except TopicError as exc:
            raise PolicyError(f"resource {resource!r}: {exc}", hint=exc.hint) from None
        if act == "publish" and any(p in ("+", "#") for p in probe):
            # A publish is checked against a topic name; a wildcard rule is still meaningful
            # (it allows every name it matches), so it is allowed here and linted instead.
            pass
        return cls(effect=eff, action=act, resource=resource, levels=levels,
                   variables=tuple(variables))

    def as_text(self) -> str:
        return f"{self.effect.value} {self.action}:{self.resource}"


def parse_rule_spec(effect: str, spec: str) -> Rule:
    """Parse the CLI form ``ACTION:RESOURCE`` (e.g. ``publish:devices/${device.id}/#``)."""
    action, sep, resource = spec.partition(":")
    # API actions contain a colon themselves: namespace:verb:resource.
    if sep and action not in MQTT_ACTIONS:
        verb, sep2, rest = resource.partition(":")
        if sep2:
            action, resource = f"{action}:{verb}", rest
    if not sep:
        raise PolicyError(f"rule {spec[:60]!r} is not ACTION:RESOURCE",
                          hint="write e.g. --allow 'publish:devices/${device.id}/#'")
    return Rule.parse(effect, action, resource)


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    rules: tuple[Rule, ...]
    description: str = ""

    @classmethod
    def build(cls, name: str, rules: Sequence[Rule], description: str = "") -> Role:
        if len(description) > MAX_DESCRIPTION:
            raise PolicyError(f"a role description has at most {MAX_DESCRIPTION} characters")
        if len(rules) > MAX_RULES_PER_ROLE:
            raise PolicyError(f"role {name!r} has {len(rules)} rules; at most "
                              f"{MAX_RULES_PER_ROLE} are allowed")
        return cls(name=parse_role_name(name), rules=tuple(rules), description=description)


def default_device_role() -> Role:
    """The least-privilege role ``iotsec init`` creates and new devices get."""
    return Role.build("device", [
        Rule.parse("allow", "publish", "devices/${device.id}/#"),
        Rule.parse("allow", "receive", "devices/${device.id}/#"),
        Rule.parse("allow", "subscribe", "devices/${device.id}/#"),
        Rule.parse("allow", "subscribe", "commands/${device.id}/#"),
        Rule.parse("allow", "receive", "commands/${device.id}/#"),
    ], description="least privilege: a device's own topics only")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: the device as the registry and its certificate describe it.
    ``roles`` are the roles bound to the device itself (its groups' come from the policy)."""

    device_id: str
    groups: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    cert_cn: str | None = None
    cert_serial: str | None = None
    roles: tuple[str, ...] = ()


def check_identity_value(value: str | None) -> str | None:
    """A substituted value must be a plain, non-empty level: no wildcard, no separator."""
    if not value or "+" in value or "#" in value or "/" in value or "\x00" in value:
        return None
    return value


__all__ = ["Effect", "Identity", "InvalidInputError", "Role", "Rule", "default_device_role",
           "parse_action", "parse_role_name", "parse_rule_spec"]
