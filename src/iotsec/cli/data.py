"""``iotsec data``: files encrypted at rest under the home's key-encryption key.

This group imports only what encrypting a file needs (not the payload code of
``iotsec payload``, nor Rich for its one line of report): its whole-process time is a goal of
its own (docs/benchmarks.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from iotsec.app import protect as service
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, note
from iotsec.errors import InvalidInputError
from iotsec.protect.atrest import DEFAULT_CHUNK_SIZE, StreamInfo

__all__ = ["InArg", "data_app", "decrypt", "encrypt", "inspect_data", "parse_size", "rewrap"]

data_app = typer.Typer(help="Encrypt files at rest under the home's key-encryption key "
                       "(streamed, any size).", no_args_is_help=True)

InArg = Annotated[str, typer.Argument(metavar="IN", help="Input file ('-' = stdin).")]


_SIZE = re.compile(r"^\s*(\d+)\s*(k|kib|m|mib)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``65536``, ``64KiB``, ``1MiB`` -> bytes."""
    found = _SIZE.fullmatch(text)
    if not found:
        raise InvalidInputError(f"invalid size {text!r}", hint="e.g. 65536, 64KiB or 1MiB")
    unit = (found.group(2) or "").lower()
    return int(found.group(1)) * (1024 if unit.startswith("k") else
                                  1024 * 1024 if unit.startswith("m") else 1)


def _info_json(info: StreamInfo) -> dict[str, Any]:
    return {"kek_id": info.kek_id, "chunk_size": info.chunk_size, "chunks": info.chunks,
            "plaintext_bytes": info.plaintext_bytes, "ciphertext_bytes": info.ciphertext_bytes}


@data_app.command("encrypt")
def encrypt(
    source: InArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="New file ('-' = stdout); an "
                                          "existing file is never overwritten.")],
    chunk_size: Annotated[str, typer.Option("--chunk-size", help="Plaintext bytes per "
                                            "authenticated chunk (4KiB to 4MiB).")
                          ] = f"{DEFAULT_CHUNK_SIZE // 1024}KiB",
    as_json: JsonOpt = False,
) -> None:
    """Encrypt a file under the home's key-encryption key (created on first use)."""
    size = parse_size(chunk_size)
    with runtime() as rt:
        info = service.encrypt_file(rt, source, output, chunk_size=size)
    if as_json and output != "-":
        emit_json(_info_json(info))
    else:
        note(f"Encrypted {info.plaintext_bytes} bytes in {info.chunks} chunks under "
             f"key-encryption key {info.kek_id}" + ("" if output == "-" else f" into {output}"))


@data_app.command("decrypt")
def decrypt(
    source: InArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="New file; it appears only "
                                          "when the whole input authenticated.")],
    as_json: JsonOpt = False,
) -> None:
    """Decrypt a file made by 'iotsec data encrypt'; refused input leaves no output."""
    with runtime() as rt:
        info = service.decrypt_file(rt, source, output)
    if as_json:
        emit_json(_info_json(info))
    else:
        note(f"Decrypted {info.plaintext_bytes} bytes ({info.chunks} chunks, "
             f"key-encryption key {info.kek_id}) into {output}")


@data_app.command("rewrap")
def rewrap(
    files: Annotated[list[str], typer.Argument(metavar="FILE...", help="Files made by "
                                               "'iotsec data encrypt'.")],
    as_json: JsonOpt = False,
) -> None:
    """Move encrypted files to the active key-encryption key (each verified, then replaced
    atomically), so that a rotation can retire the old one."""
    with runtime() as rt:
        done = [service.rewrap_file(rt, path) for path in files]
    if as_json:
        emit_json([{"path": r.path, "old_kek": r.old_kek, "new_kek": r.new_kek,
                    "changed": r.old_kek != r.new_kek} for r in done])
        return
    for r in done:
        what = (f"{r.old_kek} -> {r.new_kek}" if r.old_kek != r.new_kek
                else f"already under {r.new_kek}")
        note(f"{r.path}: {what}")


@data_app.command("inspect")
def inspect_data(source: InArg, as_json: JsonOpt = False) -> None:
    """Show an encrypted file's header. Nothing is verified: no key is used."""
    header = service.inspect_file(source)
    data = {"version": header.version, "chunk_size": header.chunk_size,
            "kek_id": header.kek_id, "wrapped_key_bytes": len(header.wrapped_key),
            "header_bytes": header.size, "verified": False}
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        console.print(f"{key + ':':<20}{value}", markup=False)
