"""Policy documents: roles and group bindings as YAML or JSON, for version control.

``parse_document`` validates against a schema and reports the line of every problem;
``render_document`` writes the canonical YAML that ``parse_document`` reads back to the same
policy. YAML is read with the safe loader, anchors/aliases are refused (no expansion
bombs), duplicate keys are errors, and the size is capped before parsing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from iotsec import yamldoc
from iotsec.access.policy import Role, Rule, parse_action, parse_role_name
from iotsec.errors import InputTooLargeError, IotsecError, PolicyError
from iotsec.identity.registry import parse_group_name

__all__ = ["MAX_DEPTH", "MAX_DOCUMENT_BYTES", "PolicyDocument", "parse_document", "render_document"]

MAX_DOCUMENT_BYTES = 1024 * 1024


class _RuleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    effect: Literal["allow", "deny"]
    action: str = Field(max_length=64)
    resource: str = Field(max_length=1024)


class _RoleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=64)
    description: str = Field(default="", max_length=1024)
    rules: list[_RuleDoc] = Field(default_factory=list, max_length=256)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = Field(default=1, ge=1, le=1)
    roles: list[_RoleDoc] = Field(default_factory=list, max_length=10_000)
    groups: dict[str, list[str]] = Field(default_factory=dict)


@dataclass(frozen=True)
class PolicyDocument:
    roles: tuple[Role, ...]
    groups: Mapping[str, tuple[str, ...]]  # group -> role names


MAX_DEPTH = 32


def _load_json(text: str) -> Any:
    """JSON that YAML refuses (tab indentation): parsed strictly, duplicate keys refused."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise PolicyError(f"duplicate key {key!r}", hint="each key may appear once")
            seen[key] = value
        return seen

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise PolicyError("the document is nested too deeply") from None


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    return yamldoc.load(text, error=PolicyError, max_depth=MAX_DEPTH, what="YAML/JSON",
                        write_out="write each role out in full",
                        depth_hint="a policy is roles, rules and groups: three levels",
                        fallback=_load_json)


def parse_document(data: bytes) -> PolicyDocument:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputTooLargeError(f"the policy file is {len(data)} bytes; the limit is "
                                 f"{MAX_DOCUMENT_BYTES}", hint="split it or remove unused roles")
    text = yamldoc.text_of(data, error=PolicyError, what="the policy file")
    raw, node = _load(text)
    try:
        doc = _Document.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise yamldoc.invalid(exc, node, error=PolicyError,
                              hint="see 'iotsec policy export' for the expected shape") from None
    roles: list[Role] = []
    names: set[str] = set()
    for i, role_doc in enumerate(doc.roles):
        try:
            rules = [Rule.parse(r.effect, r.action, r.resource) for r in role_doc.rules]
            role = Role.build(role_doc.name, rules, role_doc.description)
        except IotsecError as exc:
            # Find the offending rule for the line number when the error is in a rule.
            path: list[int | str] = ["roles", i]
            for j, r in enumerate(role_doc.rules):
                try:
                    Rule.parse(r.effect, r.action, r.resource)
                except IotsecError:
                    try:
                        parse_action(r.action)
                        field = "resource"
                    except IotsecError:
                        field = "action"
                    path += ["rules", j, field]
                    break
            raise PolicyError(f"line {yamldoc.line_of(node, path) or '?'}: {exc}",
                              hint=exc.hint) from None
        if role.name in names:
            twice_at = yamldoc.line_of(node, ["roles", i]) or "?"
            raise PolicyError(f"line {twice_at}: role {role.name!r} is defined twice")
        names.add(role.name)
        roles.append(role)
    groups: dict[str, tuple[str, ...]] = {}
    for group, bound in doc.groups.items():
        try:
            parse_group_name(group)
            groups[group] = tuple(sorted({parse_role_name(r) for r in bound}))
        except IotsecError as exc:
            raise PolicyError(f"line {yamldoc.line_of(node, ['groups', group]) or '?'}: {exc}",
                              hint=exc.hint) from None
    return PolicyDocument(roles=tuple(roles), groups=groups)


def render_document(roles: Sequence[Role], groups: Mapping[str, Sequence[str]]) -> str:
    data: dict[str, Any] = {
        "version": 1,
        "roles": [{"name": r.name, "description": r.description,
                   "rules": [{"effect": x.effect.value, "action": x.action,
                              "resource": x.resource} for x in r.rules]}
                  for r in sorted(roles, key=lambda r: r.name)],
        "groups": {g: sorted(rs) for g, rs in sorted(groups.items()) if rs},
    }
    header = ("# iotsec access policy: roles and the groups that hold them.\n"
              "# Apply with 'iotsec policy apply FILE'; check with 'iotsec policy lint'.\n")
    # ASCII output: characters such as U+0085 would otherwise be read back as line breaks.
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=False, width=100)
