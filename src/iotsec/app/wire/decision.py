"""The JSON shape of a policy decision as a plain dict, the fields of its model
(:class:`~iotsec.app.wire.access.DecisionOut`): the API's decision fast path writes it
without building a model, and ``iotsec authz check --json`` without pydantic."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iotsec.access.engine import Decision

__all__ = ["decision_fields"]


def decision_fields(d: Decision) -> dict[str, Any]:
    """The fields of ``DecisionOut``, as a plain dict."""
    return {"allowed": d.allowed, "decision": "allow" if d.allowed else "deny",
            "role": d.role, "rule_index": d.rule_index,
            "rule": d.rule.as_text() if d.rule else None, "explanation": d.explanation}
