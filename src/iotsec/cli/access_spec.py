"""The interface of ``iotsec authz check`` in one place: its arguments and options
(declared with these names and defaults by the Typer command of :mod:`iotsec.cli.access`,
and read by :func:`iotsec.cli.spec.parse` for :mod:`iotsec.cli.lean`), and what it prints.

Standard library only (no Typer, Rich or pydantic): ``iotsec authz check`` starts without
them (ADR 0050). tests/cli/test_lean_authz.py checks that the parser and the Typer command
accept the same command lines and give the same values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iotsec.app.wire.decision import decision_fields
from iotsec.cli.plain import say, write_json
from iotsec.cli.spec import JSON_FLAG, CommandSpec

if TYPE_CHECKING:
    from iotsec.access.engine import Decision

__all__ = ["AUTHZ_CHECK", "report_decision"]

AUTHZ_CHECK: Final = CommandSpec(
    path=("authz", "check"), arguments=("device", "action", "resource"),
    options=(("--cert-serial", "cert_serial", None),), flags=(JSON_FLAG,))


def report_decision(decision: Decision, as_json: bool) -> int:
    """Print the decision (JSON, or one plain line: a script greps it, and a long topic is
    never wrapped) and return the command's exit code: 0 allow, 1 deny."""
    if as_json:
        write_json(decision_fields(decision))
    else:
        say(f"{'allow' if decision.allowed else 'deny'}: {decision.explanation}")
    return 0 if decision.allowed else 1
