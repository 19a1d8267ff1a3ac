"""``iotsec backup create|restore`` and ``iotsec migrate``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console, read_input, when
from iotsec.config import Settings
from iotsec.errors import InvalidInputError

__all__ = ["MAX_CRL_FILE", "PASSPHRASE_ENV", "app", "create", "migrate", "restore"]

app = typer.Typer(help="Encrypted backups of a home, and restoring them.", no_args_is_help=True)
PASSPHRASE_ENV = "IOTSEC_BACKUP_PASSPHRASE"  # noqa: S105 - the name of a variable
#: The largest published CRL ``--published-crl`` reads.
MAX_CRL_FILE = 256 * 1024 * 1024


def _passphrase(*, confirm: bool) -> bytes:
    """The backup passphrase: from the environment, or asked for on a terminal (never an
    argument: it would show in the process list and the shell history)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise InvalidInputError("no backup passphrase",
                                    hint=f"set {PASSPHRASE_ENV}, or run on a terminal")
        value = typer.prompt("Backup passphrase", hide_input=True,
                             confirmation_prompt=confirm)
    return value.encode("utf-8")


@app.command("create")
def create(
    output: Annotated[Path, typer.Argument(metavar="FILE", help="The backup file to write "
                                           "(must not exist).")],
    as_json: JsonOpt = False,
) -> None:
    """Back up the home while it runs: every table (one consistent snapshot) and the key
    files, encrypted under a passphrase (IOTSEC_BACKUP_PASSPHRASE or asked)."""
    from iotsec.app.backup import create_backup  # deferred: start-up time

    result = create_backup(Settings(), output, _passphrase(confirm=True))
    if as_json:
        emit_json({"path": str(result.path), "bytes": result.size,
                   "created_at": result.created_at, "tables": result.tables,
                   "files": result.files, "skipped": result.skipped,
                   "keystore": result.keystore,
                   "ca_passphrase_included": result.ca_passphrase_included})
        return
    console.print(f"Backed up {sum(result.tables.values())} rows of {len(result.tables)} "
                  f"tables and {len(result.files)} files to {result.path} "
                  f"({result.size} bytes)", markup=False)
    if result.keystore == "pkcs11":
        err_console.print("The CA keys are in the PKCS#11 token and are not in this backup: "
                          "back the token up with its own tools.", markup=False)
    if not result.ca_passphrase_included:
        err_console.print("The CA passphrase comes from IOTSEC_CA_PASSPHRASE and is not in "
                          "this backup: keep it with the backup passphrase.", markup=False)
    for path in result.skipped:
        err_console.print(f"Not backed up (not a regular file): {path}", markup=False)


def _restore_json(result: Any) -> dict[str, Any]:
    return {"home": str(result.home), "database": result.database,
            "backup_created_at": result.backup_created_at, "tables": result.tables,
            "files": result.files,
            "crls": [{"authority_id": c.authority_id, "subject": c.subject,
                      "number_in_backup": c.in_backup, "next_number": c.next_number,
                      "basis": c.basis} for c in result.crls],
            "revocations_applied": result.revocations_applied,
            "unknown_revoked": result.unknown_revoked,
            "replaced_home": None if result.replaced is None else str(result.replaced)}


@app.command("restore")
def restore(
    source: Annotated[Path, typer.Argument(metavar="FILE", help="A file made by "
                                           "'iotsec backup create'.")],
    force: Annotated[bool, typer.Option("--force", help="Restore over a home that is not "
                                        "empty (it is kept aside, renamed).")] = False,
    min_crl_number: Annotated[int | None, typer.Option(
        "--min-crl-number", metavar="N", help="The highest CRL number the CAs ever "
        "published; the next CRLs are numbered above it.")] = None,
    published_crl: Annotated[list[str] | None, typer.Option(
        "--published-crl", metavar="FILE", help="The last CRL a CA published (DER or PEM; "
        "repeatable): numbering continues above it and its revocations are kept.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into an empty home (IOTSEC_HOME; into the empty PostgreSQL database
    IOTSEC_DATABASE_URL names, if set), keeping CRL numbers increasing."""
    from iotsec.app.restore import parse_published_crl, restore_backup  # deferred

    given = [parse_published_crl(name, read_input(name, MAX_CRL_FILE, "CRL"))
             for name in published_crl or []]
    result = restore_backup(Settings(), source, _passphrase(confirm=False), force=force,
                            min_crl_number=min_crl_number, published=given)
    if as_json:
        emit_json(_restore_json(result))
        return
    console.print(f"Restored the backup of {when(result.backup_created_at)} into "
                  f"{result.home} (store: {result.database})", markup=False)
    if result.replaced is not None:
        console.print(f"The previous home is kept in {result.replaced}", markup=False)
    for c in result.crls:
        console.print(f"  CRL of {c.subject}: next number {c.next_number} (was {c.in_backup} "
                      f"in the backup; {c.basis})", markup=False)
    if result.revocations_applied:
        console.print(f"  {len(result.revocations_applied)} revocations from the published "
                      "CRLs applied", markup=False)
    if result.unknown_revoked:
        err_console.print("Revoked in a published CRL but unknown to the backup (issued "
                          "after it): import their certificates with 'iotsec cert import' "
                          "and revoke them again: " + ", ".join(result.unknown_revoked),
                          markup=False, soft_wrap=True)
    err_console.print(
        "Certificates issued after the backup are unknown to the restored store: register "
        "them with 'iotsec cert import FILE...' so that they can be revoked. API tokens, "
        "device keys and device states changed after the backup are as they were then: "
        "review them.", markup=False)
    if result.keystore == "pkcs11":
        err_console.print("The CA keys stay in the PKCS#11 token (not in the backup): "
                          "configure the token as before.", markup=False)
    if not result.ca_passphrase_included:
        err_console.print("Set IOTSEC_CA_PASSPHRASE as before: the backup does not hold it.",
                          markup=False)


def migrate(
    to: Annotated[str, typer.Option("--to", metavar="URL", help="An empty PostgreSQL "
                                    "database: postgresql+psycopg://USER@HOST/DB")],
    as_json: JsonOpt = False,
) -> None:
    """Move the home's SQLite store to PostgreSQL: copied and verified (row counts and
    digests, CRLs byte for byte), then used by every later command."""
    from iotsec.app.migration import migrate_home  # deferred: start-up time

    def progress(table: str, done: int, total: int) -> None:
        if not as_json and (done == total or done % 50_000 == 0):
            err_console.print(f"  {table}: {done}/{total}", markup=False)

    result = migrate_home(Settings(), to, progress=progress)
    if as_json:
        emit_json({"target": result.target, "tables": result.tables, "crls": result.crls,
                   "sqlite_file": result.sqlite_file})
        return
    console.print(f"Moved {sum(result.tables.values())} rows to {result.target}; the home now "
                  "uses it (recorded in database.json in the home).", markup=False)
    console.print(f"The SQLite store {result.sqlite_file} is kept, read-only.", markup=False)
