"""``iotsec keys``: list, generate and export keys in custody (files or a PKCS#11 token),
rotate the key-encryption key, and report what depends on each key.

The PKCS#11 PIN is read from ``IOTSEC_PKCS11_PIN`` only; no command takes it as an option.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from iotsec.app.custody import kek_rotation as rotation
from iotsec.app.custody import keys as service
from iotsec.app.wire.records import KeyEntryOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console, table, write_output
from iotsec.custody.keks import Backend
from iotsec.errors import InvalidInputError
from iotsec.pki.keys import KeyType

__all__ = [
    "ROTATABLE", "app", "export_public", "generate", "list_", "reinstate", "report", "retire",
    "rotate"
]

app = typer.Typer(help="Keys in custody: list, generate, export public keys, rotate the "
                  "key-encryption key, and report what depends on each key.",
                  no_args_is_help=True)
ROTATABLE = ("kek",)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """CA keys, firmware signing keys, key-encryption keys and (with a token) the token's
    other keys."""
    with runtime() as rt:
        entries = service.list_keys(rt)
    if as_json:
        emit_json([KeyEntryOut.from_domain(e) for e in entries])
        return
    table("Keys in custody", ["label", "purpose", "backend", "type", "state"],
          [[e.label, e.purpose, e.backend, e.key_type, e.state] for e in entries])


@app.command("generate")
def generate(
    label: Annotated[str, typer.Argument(metavar="LABEL", help="New key's label (a-z 0-9 . _ "
                                         "-).")],
    key_type: Annotated[str, typer.Option("--type", help="ecdsa-p256, ecdsa-p384 or "
                                          "rsa-3072.")] = "ecdsa-p256",
    as_json: JsonOpt = False,
) -> None:
    """Generate a signing key in the configured key store (inside the token with
    IOTSEC_KEYSTORE=pkcs11: non-extractable)."""
    with runtime() as rt:
        entry = service.generate_key(rt, label, KeyType.parse(key_type))
    if as_json:
        emit_json(KeyEntryOut.from_domain(entry))
        return
    err_console.print(f"Generated {entry.key_type} key {entry.label!r} in the {entry.backend} "
                      "key store", markup=False)


@app.command("export-public")
def export_public(
    label: Annotated[str, typer.Argument(metavar="LABEL", help="A signing key's label.")],
    output: Annotated[str | None, typer.Option("--out", "-o", help="File to write (default: "
                                               "standard output).")] = None,
) -> None:
    """Write a signing key's public key (SubjectPublicKeyInfo PEM): a CA key or a firmware
    signing key."""
    with runtime() as rt:
        pem = service.export_public(rt, label)
    write_output(output, pem)


def _usage_json(report: rotation.KeyReport) -> dict[str, Any]:
    return {"keks": [{"key_id": k.key_id, "backend": k.backend, "state": k.state,
                      "records": k.records, "columns": k.columns, "files": k.files}
                     for k in report.keks],
            "malformed": report.malformed, "rotation": report.rotation}


@app.command("report")
def report(as_json: JsonOpt = False) -> None:
    """How many stored records and encrypted files still depend on each key-encryption key
    (no key is used)."""
    with runtime() as rt:
        result = rotation.key_report(rt)
    if as_json:
        emit_json(_usage_json(result))
        return
    table("Records per key-encryption key", ["key", "backend", "state", "records", "files"],
          [[k.key_id, k.backend, k.state, k.records, k.files] for k in result.keks])
    if result.malformed:
        err_console.print(f"{result.malformed} stored values are not valid envelopes",
                          markup=False)
    if result.rotation is not None:
        err_console.print(f"An unfinished rotation to {result.rotation['target']} is "
                          "recorded; 'iotsec keys rotate kek' resumes it", markup=False)


def _backend(text: str | None) -> Backend | None:
    if text is None:
        return None
    if text not in ("file", "pkcs11"):
        raise InvalidInputError(f"unknown backend {text!r}", hint="choose 'file' or 'pkcs11'")
    return "file" if text == "file" else "pkcs11"


@app.command("rotate")
def rotate(
    which: Annotated[str, typer.Argument(metavar="KEY", help="What to rotate: 'kek' (the "
                                         "key-encryption key).")],
    backend: Annotated[str | None, typer.Option("--backend", help="Where the new KEK lives: "
                                                "file or pkcs11 (default: IOTSEC_KEYSTORE).")
                       ] = None,
    keep_old: Annotated[bool, typer.Option("--keep-old", help="Re-wrap, but leave the old "
                                           "keys usable (do not retire them).")] = False,
    destroy: Annotated[bool, typer.Option("--destroy", help="Delete the old keys instead of "
                                          "retiring them (irreversible).")] = False,
    batch: Annotated[int, typer.Option("--batch", min=1, max=100_000, help="Records per "
                                       "transaction.")] = rotation.DEFAULT_BATCH,
    force: Annotated[bool, typer.Option("--force", help="Retire the old keys even though "
                                        "files from 'iotsec data encrypt' may still depend "
                                        "on them (those files can then not be decrypted).")
                     ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rotate the key-encryption key: new writes use a new KEK at once, every stored data
    key is re-wrapped under it (the data is not decrypted), then the old KEKs are retired.
    Interrupted, it resumes where it stopped when run again."""
    if which.lower() not in ROTATABLE:
        raise InvalidInputError(f"cannot rotate {which!r}",
                                hint="'iotsec keys rotate kek' rotates the key-encryption key")
    if keep_old and destroy:
        raise InvalidInputError("--keep-old and --destroy contradict each other")
    with runtime() as rt:
        result = rotation.rotate_kek(rt, backend=_backend(backend), batch=batch,
                                     retire=not keep_old, destroy=destroy, force=force)
    data = {"target": result.target, "resumed": result.resumed,
            "rewrapped": result.rewrapped,
            "skipped": result.skipped, "failed": result.failed,
            "remaining": result.remaining, "retired": result.retired,
            "files": result.files, "complete": result.complete}
    if as_json:
        emit_json(data)
    else:
        verb = "Resumed the rotation to" if result.resumed else "Rotated to"
        console.print(f"{verb} {result.target}: {result.rewrapped} data keys re-wrapped"
                      + (f", retired {', '.join(result.retired)}" if result.retired else ""),
                      markup=False)
        for failure in result.failed:
            err_console.print(f"  not re-wrapped: {failure}", markup=False)
    if result.files and not result.remaining:
        held = ", ".join(f"{k}: {v}" for k, v in sorted(result.files.items()))
        err_console.print(f"iotsec: error: encrypted files may still depend on old keys "
                          f"({held}); nothing was retired (move them with 'iotsec data rewrap "
                          "FILE...' and run 'iotsec keys rotate kek' again, or give --force)",
                          markup=False, soft_wrap=True)
        raise typer.Exit(1)
    if not result.complete:
        remaining = ", ".join(f"{k}: {v}" for k, v in sorted(result.remaining.items()))
        err_console.print(f"iotsec: error: records still depend on old keys ({remaining}); "
                          "nothing was retired (run 'iotsec keys rotate kek' again to resume)",
                          markup=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("retire")
def retire(
    key_id: Annotated[str, typer.Argument(metavar="KEK", help="A key-encryption key id.")],
    destroy: Annotated[bool, typer.Option("--destroy", help="Delete it (irreversible).")
                       ] = False,
    force: Annotated[bool, typer.Option("--force", help="Even if encrypted files may still "
                                        "depend on it.")] = False,
) -> None:
    """Retire a key-encryption key no stored record or encrypted file depends on."""
    with runtime() as rt:
        rotation.retire_kek(rt, key_id, destroy=destroy, force=force)
    err_console.print(f"{'Destroyed' if destroy else 'Retired'} {key_id}", markup=False)


@app.command("reinstate")
def reinstate(
    key_id: Annotated[str, typer.Argument(metavar="KEK", help="A retired key-encryption "
                                          "key id.")],
) -> None:
    """Make a retired key-encryption key usable again (to recover data still under it)."""
    with runtime() as rt:
        rotation.reinstate_kek(rt, key_id)
    err_console.print(f"Reinstated {key_id}", markup=False)
