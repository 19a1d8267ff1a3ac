"""The problems of a zone policy file: every one collected with its line, then raised
together in one :class:`~iotsec.errors.NetsegPolicyError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from iotsec.errors import NetsegPolicyError
from iotsec.netseg.source import Source

__all__ = ["MAX_PROBLEMS", "POLICY_HINT", "Problems", "path_text"]

#: Problems collected at the most; later ones are dropped.
MAX_PROBLEMS = 200
POLICY_HINT = ("a zone policy has version, firewall, zones (name, vlan, subnets, interface, "
               "admin, management) and rules (name, action, from, to, proto, ports, services, "
               "log)")


class Problems:
    """Collects ``(line, message)`` pairs; stops collecting past ``MAX_PROBLEMS``."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.items: list[tuple[int | None, str]] = []

    def add(self, path: Sequence[int | str], message: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append((self.source.line(path), message))

    def add_schema(self, exc: ValidationError, prefix: Sequence[int | str] = ()) -> None:
        for err in exc.errors(include_url=False):
            loc = (*prefix, *err.get("loc", ()))
            msg = err.get("msg", "invalid")
            value = err.get("input")
            if err.get("type") not in ("missing", "extra_forbidden") and \
                    isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
                msg += f" (got {value!r})"
            if err.get("type") == "extra_forbidden":
                msg = "unknown key (check the spelling)"
            self.add(loc, f"{path_text(loc)}: {msg}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        self.items.sort(key=lambda item: (item[0] is None, item[0] or 0))
        line, message = self.items[0]
        more = len(self.items) - 1
        text = f"line {line}: {message}" if line is not None else message
        if more:
            text += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise NetsegPolicyError(text, hint=POLICY_HINT, problems=tuple(self.items))


def path_text(loc: Sequence[int | str]) -> str:
    """A place in the document as text, e.g. ``rules[3].from``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"
