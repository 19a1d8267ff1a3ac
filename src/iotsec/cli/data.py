"""``iotsec data``: files encrypted at rest under the home's key-encryption key.

This group imports only what encrypting a file needs (not the payload code of
``iotsec payload``, nor Rich for its one line of report): its whole-process time is a goal of
its own (docs/benchmarks.md). ``encrypt`` and ``decrypt`` usually run without this module at
all: :mod:`iotsec.cli.lean` runs them before Typer is imported, and leaves to these commands
what it does not understand (ADR 0033).
"""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app import protect as service
from iotsec.cli.context import runtime
from iotsec.cli.data_spec import (
    DECRYPT,
    DEFAULT_CHUNK_TEXT,
    ENCRYPT,
    info_json,
    parse_size,
    report_decrypted,
    report_encrypted,
)
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, note

__all__ = ["InArg", "data_app", "decrypt", "encrypt", "info_json", "inspect_data",
           "parse_size", "rewrap"]

data_app = typer.Typer(help="Encrypt files at rest under the home's key-encryption key "
                       "(streamed, any size).", no_args_is_help=True)

InArg = Annotated[str, typer.Argument(metavar="IN", help="Input file ('-' = stdin).")]


# The interface of 'encrypt' and 'decrypt' is ENCRYPT and DECRYPT (data_spec.py): the same
# names and defaults, which iotsec.cli.lean reads before Typer is imported.
@data_app.command(ENCRYPT.path[-1])
def encrypt(
    source: InArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="New file ('-' = stdout); an "
                                          "existing file is never overwritten.")],
    chunk_size: Annotated[str, typer.Option(ENCRYPT.flag("chunk_size"), help="Plaintext "
                                            "bytes per authenticated chunk (4KiB to 4MiB).")
                          ] = DEFAULT_CHUNK_TEXT,
    as_json: JsonOpt = False,
) -> None:
    """Encrypt a file under the home's key-encryption key (created on first use)."""
    size = parse_size(chunk_size)
    with runtime() as rt:
        info = service.encrypt_file(rt, source, output, chunk_size=size)
    report_encrypted(info, output, as_json)


@data_app.command(DECRYPT.path[-1])
def decrypt(
    source: InArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="New file; it appears only "
                                          "when the whole input authenticated.")],
    as_json: JsonOpt = False,
) -> None:
    """Decrypt a file made by 'iotsec data encrypt'; refused input leaves no output."""
    with runtime() as rt:
        info = service.decrypt_file(rt, source, output)
    report_decrypted(info, output, as_json)


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
