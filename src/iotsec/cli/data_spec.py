"""The interface of ``iotsec data encrypt`` and ``decrypt``, in one place: their arguments
and options (declared with these names and defaults by the Typer commands of
:mod:`iotsec.cli.data`, and read by :func:`parse` for :mod:`iotsec.cli.lean`), the
chunk-size syntax, and what each prints when it is done.

Standard library only (no Typer, no Rich): ``iotsec data encrypt`` starts without them
(ADR 0033). tests/cli/test_lean_data.py checks that :func:`parse` and the Typer commands
accept the same command lines and give the same values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from iotsec.cli.plain import note, write_json
from iotsec.errors import InvalidInputError
from iotsec.protect.atrest import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from iotsec.protect.atrest import StreamInfo

__all__ = ["DECRYPT", "ENCRYPT", "CommandSpec", "info_json", "parse", "parse_size",
           "report_decrypted", "report_encrypted"]


class CommandSpec(NamedTuple):
    """A command's interface: its words after ``iotsec``, its arguments (the command
    function's parameter names, in order), its options that take one value (flag,
    parameter, default) and its boolean flags (flag, parameter; default False)."""

    path: tuple[str, ...]
    arguments: tuple[str, ...]
    options: tuple[tuple[str, str, str], ...] = ()
    flags: tuple[tuple[str, str], ...] = ()

    def flag(self, parameter: str) -> str:
        """The option of ``parameter``."""
        found = [f for f, p, _d in self.options if p == parameter]
        found += [f for f, p in self.flags if p == parameter]
        return found[0]

    def default(self, parameter: str) -> str:
        """The default of the option of ``parameter``."""
        return next(d for _f, p, d in self.options if p == parameter)


JSON_FLAG: Final = ("--json", "as_json")

ENCRYPT: Final = CommandSpec(
    path=("data", "encrypt"), arguments=("source", "output"),
    options=(("--chunk-size", "chunk_size", f"{DEFAULT_CHUNK_SIZE // 1024}KiB"),),
    flags=(JSON_FLAG,))
DECRYPT: Final = CommandSpec(
    path=("data", "decrypt"), arguments=("source", "output"), flags=(JSON_FLAG,))


def parse(spec: CommandSpec, tokens: Sequence[str]) -> dict[str, Any] | None:
    """The values of ``spec``'s parameters in ``tokens`` (the command line after
    ``spec.path``), as the Typer command receives them; or None for anything but a plain
    use of the interface, which is then left to the Typer command: ``--help``, an unknown
    option, an option given twice, ``--``, a value that starts with ``-``, a flag given a
    value, too few or too many arguments."""
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
    return values


_SIZE = re.compile(r"^\s*(\d+)\s*(k|kib|m|mib)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``65536``, ``64KiB``, ``1MiB`` -> bytes."""
    found = _SIZE.fullmatch(text)
    if not found:
        raise InvalidInputError(f"invalid size {text!r}", hint="e.g. 65536, 64KiB or 1MiB")
    unit = (found.group(2) or "").lower()
    return int(found.group(1)) * (1024 if unit.startswith("k") else
                                  1024 * 1024 if unit.startswith("m") else 1)


def info_json(info: StreamInfo) -> dict[str, Any]:
    """What ``--json`` prints of an encrypted or decrypted stream."""
    return {"kek_id": info.kek_id, "chunk_size": info.chunk_size, "chunks": info.chunks,
            "plaintext_bytes": info.plaintext_bytes, "ciphertext_bytes": info.ciphertext_bytes}


def report_encrypted(info: StreamInfo, output: str, as_json: bool) -> None:
    """What ``iotsec data encrypt`` prints when done (JSON only when the ciphertext did not
    go to standard output)."""
    if as_json and output != "-":
        write_json(info_json(info))
    else:
        note(f"Encrypted {info.plaintext_bytes} bytes in {info.chunks} chunks under "
             f"key-encryption key {info.kek_id}" + ("" if output == "-" else f" into {output}"))


def report_decrypted(info: StreamInfo, output: str, as_json: bool) -> None:
    """What ``iotsec data decrypt`` prints when done."""
    if as_json:
        write_json(info_json(info))
    else:
        note(f"Decrypted {info.plaintext_bytes} bytes ({info.chunks} chunks, "
             f"key-encryption key {info.kek_id}) into {output}")
