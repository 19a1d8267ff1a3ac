"""``iotsec crl``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from iotsec.app.pki.authorities import authority_crl, resolve_ca
from iotsec.app.pki.crl import current_delta_crl
from iotsec.app.pki.partition_crl import MAX_PARTITION, current_partition_crl
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
    delta: Annotated[bool, typer.Option(
        "--delta", help="The delta CRL (RFC 5280 5.2.4): the revocations since the complete "
        "CRL it names as its base.")] = False,
    partition: Annotated[int | None, typer.Option(
        "--partition", min=0, max=MAX_PARTITION, metavar="K",
        help="The CRL of partition K of the issuing CA (IOTSEC_CRL_PARTITIONS).")] = None,
) -> None:
    """Publish the current CRL (DER by default), rebuilding it when it is due: the complete
    CRL, its delta (--delta) or one partition's (--partition K)."""
    if delta and partition is not None:
        raise typer.BadParameter("give --delta or --partition, not both")
    if partition is not None and ca != "issuing":
        raise typer.BadParameter("partition CRLs are the issuing CA's", param_hint="--ca")
    if output is None and not pem and sys.stdout.isatty():
        raise InvalidInputError("refusing to write a binary DER CRL to the terminal",
                                hint="use -o FILE, or --pem")
    with runtime() as rt:
        if partition is not None:
            published = current_partition_crl(rt, partition, force=force)
        elif delta:
            published = current_delta_crl(rt, authority_id=resolve_ca(rt, ca), force=force)
        else:
            published = authority_crl(rt, resolve_ca(rt, ca), force=force)
    data = published.der
    if pem:
        data = to_pem(data, "X509 CRL")
    write_output(output, data)
