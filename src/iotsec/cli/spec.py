"""A command's interface declared once (:class:`CommandSpec`: its arguments, its options
with their defaults, its flags), for the commands :mod:`iotsec.cli.lean` runs before Typer
is imported: their Typer commands declare their parameters from it, and :func:`parse`
reads a command line with it as click reads it, or leaves the line to Typer.

Standard library only (ADRs 0033 and 0050). tests/cli/test_lean_data.py and
tests/cli/test_lean_authz.py check that :func:`parse` and the Typer commands accept the
same command lines and give the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

__all__ = ["JSON_FLAG", "CommandSpec", "parse"]


class CommandSpec(NamedTuple):
    """A command's interface: its words after ``iotsec``, its arguments (the command
    function's parameter names, in order), its options that take one value (flag,
    parameter, default), its boolean flags (flag, parameter; default False) and which of
    its options take an integer (their parameters)."""

    path: tuple[str, ...]
    arguments: tuple[str, ...]
    options: tuple[tuple[str, str, str | int | None], ...] = ()
    flags: tuple[tuple[str, str], ...] = ()
    integers: frozenset[str] = frozenset()

    def flag(self, parameter: str) -> str:
        """The option of ``parameter``."""
        found = [f for f, p, _d in self.options if p == parameter]
        found += [f for f, p in self.flags if p == parameter]
        return found[0]


JSON_FLAG: Final = ("--json", "as_json")


def parse(spec: CommandSpec, tokens: Sequence[str]) -> dict[str, Any] | None:
    """The values of ``spec``'s parameters in ``tokens`` (the command line after
    ``spec.path``), as the Typer command receives them; or None for anything but a plain
    use of the interface, which is then left to the Typer command: ``--help``, an unknown
    option, an option given twice, ``--``, a value that starts with ``-``, a flag given a
    value, an integer option given something else, too few or too many arguments."""
    takes_value = {flag: parameter for flag, parameter, _default in spec.options}
    flags = dict(spec.flags)
    values: dict[str, Any] = {parameter: default for _f, parameter, default in spec.options}
    values.update({parameter: False for _f, parameter in spec.flags})
    positional: list[str] = []
    seen: set[str] = set()
    rest = list(tokens)
    while rest:
        word = rest.pop(0)
        # As click reads a command line: "-" alone is an argument (standard input or
        # output), anything else that starts with "-" an option.
        if word == "-" or not word.startswith("-"):
            positional.append(word)
            continue
        name, equals, value = word.partition("=")
        if name in seen:
            return None
        seen.add(name)
        if name in flags and not equals:
            values[flags[name]] = True
        elif name in takes_value:
            if not equals:
                if not rest or rest[0].startswith("-"):
                    return None
                value = rest.pop(0)
            values[takes_value[name]] = value
        else:
            return None
    if len(positional) != len(spec.arguments):
        return None
    values.update(zip(spec.arguments, positional, strict=True))
    for parameter in spec.integers:
        value = values[parameter]
        if isinstance(value, str):
            # As click's INT reads it (Python's int of the text); anything else is left
            # to Typer, which says what is wrong with it.
            try:
                values[parameter] = int(value)
            except ValueError:
                return None
    return values
