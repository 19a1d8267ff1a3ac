"""``iotsec crl``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from iotsec.app.pki.authorities import authority_crl, resolve_ca
from iotsec.cli.context import runtime
from iotsec.cli.options import OutputFileOpt
from iotsec.cli.output import write_output
from iotsec.errors import InvalidInputError
from iotsec.pki.x509 import to_pem

__all__ = ["crl"]


def crl(
    pem: Annotated[bool, typer.Option("--pem", help="PEM instead of DER.")] = False,
    output: OutputFileOpt = None,
    ca: Annotated[str, typer.Option("--ca", help="issuing (default), root, or a CA id from "
                                    "'iotsec ca list' (a retiring or retired CA)")] = "issuing",
    force: Annotated[bool, typer.Option("--force", help="Re-sign even if current.")] = False,
) -> None:
    """Publish the current CRL (DER by default), rebuilding it when it is due."""
    if output is None and not pem and sys.stdout.isatty():
        raise InvalidInputError("refusing to write a binary DER CRL to the terminal",
                                hint="use -o FILE, or --pem")
    with runtime() as rt:
        published = authority_crl(rt, resolve_ca(rt, ca), force=force)
    data = published.der
    if pem:
        data = to_pem(data, "X509 CRL")
    write_output(output, data)
