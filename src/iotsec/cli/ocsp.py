"""``iotsec ocsp``: OCSP as a client."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from iotsec.app.pki.ocsp_check import check_status
from iotsec.app.wire.ocsp import OcspStatusOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import emit_json, read_input, table, when

__all__ = ["app", "check"]

app = typer.Typer(help="OCSP (RFC 6960): ask a responder about a certificate.",
                  no_args_is_help=True)

#: A certificate file is a few KiB; nothing legitimate is near this.
MAX_CERT_FILE = 64 * 1024


@app.command("check")
def check(
    serial: Annotated[str | None, typer.Argument(
        metavar="[SERIAL]", help="Hex serial of a certificate in this home's store.")] = None,
    cert: Annotated[str | None, typer.Option(
        "--cert", metavar="FILE", help="The certificate to ask about (PEM or DER).")] = None,
    issuer: Annotated[str | None, typer.Option(
        "--issuer", metavar="FILE",
        help="Its issuing CA's certificate (default: found in this home's store).")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", metavar="URL",
        help="The responder (default: the certificate's AIA OCSP URL, else "
             "IOTSEC_PUBLIC_URL/ocsp, else this home's responder in-process).")] = None,
    no_nonce: Annotated[bool, typer.Option(
        "--no-nonce", help="Send no nonce (and accept a pre-signed answer).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Ask whether a certificate is good, revoked or unknown, and verify the signed answer
    (signer authorised by the CA, nonce echoed, time window current). Exit 0 whatever the
    status; 1 when no trustworthy answer was had."""
    cert_data = read_input(cert, MAX_CERT_FILE, "certificate") if cert else None
    issuer_data = read_input(issuer, MAX_CERT_FILE, "issuer certificate") if issuer else None
    with contextlib.ExitStack() as stack:
        # A certificate, its issuer and a URL need no home: this can check any CA's.
        standalone = serial is None and issuer_data is not None and url is not None
        rt = None if standalone else stack.enter_context(runtime())
        done = check_status(rt, serial=serial, cert_data=cert_data, issuer_data=issuer_data,
                            url=url, nonce=not no_nonce)
    out = OcspStatusOut.from_domain(done)
    if as_json:
        emit_json(out)
        return
    rows = [(k, when(v) if hasattr(v, "strftime") else ("" if v is None else str(v)))
            for k, v in out.model_dump().items()]
    table(f"OCSP status of {out.serial}: {out.status}", ["field", "value"], rows)
