"""The interface of ``iotsec data encrypt`` and ``decrypt``, in one place: their arguments
and options (declared with these names and defaults by the Typer commands of
:mod:`iotsec.cli.data`, and read by :func:`iotsec.cli.spec.parse` for
:mod:`iotsec.cli.lean`), the chunk-size syntax, and what each prints when it is done.

Standard library only (no Typer, no Rich): ``iotsec data encrypt`` starts without them
(ADR 0033). tests/cli/test_lean_data.py checks that the parser and the Typer commands
accept the same command lines and give the same values.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from iotsec.cli.plain import note, write_json
from iotsec.cli.spec import JSON_FLAG, CommandSpec
from iotsec.errors import InvalidInputError
from iotsec.protect.atrest import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from iotsec.protect.atrest import StreamInfo

__all__ = ["DECRYPT", "DEFAULT_CHUNK_TEXT", "ENCRYPT", "info_json", "parse_size",
           "report_decrypted", "report_encrypted"]


#: The chunk size of ``data encrypt`` when ``--chunk-size`` is not given.
DEFAULT_CHUNK_TEXT: Final = f"{DEFAULT_CHUNK_SIZE // 1024}KiB"
ENCRYPT: Final = CommandSpec(
    path=("data", "encrypt"), arguments=("source", "output"),
    options=(("--chunk-size", "chunk_size", DEFAULT_CHUNK_TEXT),),
    flags=(JSON_FLAG,))
DECRYPT: Final = CommandSpec(
    path=("data", "decrypt"), arguments=("source", "output"), flags=(JSON_FLAG,))


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
