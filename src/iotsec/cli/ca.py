"""``iotsec ca``: the CA hierarchy."""

from __future__ import annotations

import typer

from iotsec.app.pki.bundles import chain_pem
from iotsec.cli.context import runtime
from iotsec.cli.options import OutputFileOpt
from iotsec.cli.output import write_output

__all__ = ["app", "chain"]

app = typer.Typer(help="The certificate authorities.", no_args_is_help=True)


@app.command("chain")
def chain(
    output: OutputFileOpt = None,
) -> None:
    """Print the issuing chain in PEM: the issuing CA, then the root."""
    with runtime() as rt:
        write_output(output, chain_pem(rt).encode("ascii"))
