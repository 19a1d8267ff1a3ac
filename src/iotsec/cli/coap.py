"""``iotsec coap``: the CoAP gateway's OSCORE security contexts (RFC 8613)."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app.coap.oscore_contexts import (
    GATEWAY_ID,
    MAX_CERT_FILE,
    ProvisionedContext,
    certificate_kid,
    edhoc_credential,
    provision_context,
    remove_context,
)
from iotsec.app.wire.coap import OscoreContextOut
from iotsec.cli.context import runtime
from iotsec.cli.options import DeviceArg, JsonOpt
from iotsec.cli.output import console, emit_json, err_console, read_input
from iotsec.protect.pairing import MAX_KEY_FILE

__all__ = ["app", "edhoc_app", "oscore_app"]

app = typer.Typer(help="CoAP for constrained devices: OSCORE security contexts.",
                  no_args_is_help=True)
oscore_app = typer.Typer(help="OSCORE (RFC 8613) contexts between the gateway and a device, "
                         "derived from pair keys (ECDH + HKDF).", no_args_is_help=True)
edhoc_app = typer.Typer(help="EDHOC (RFC 9528): devices establish OSCORE contexts with "
                        "their certificate key.", no_args_is_help=True)
app.add_typer(oscore_app, name="oscore")
app.add_typer(edhoc_app, name="edhoc")


def _out(ctx: ProvisionedContext) -> OscoreContextOut:
    return OscoreContextOut(
        device_id=ctx.device_id, gateway_id=ctx.gateway_id,
        gateway_public_key=ctx.gateway_public_pem, key_type=ctx.key_type, salt=ctx.salt.hex(),
        device_sender_id=ctx.device_sender_id.hex(),
        gateway_sender_id=ctx.gateway_sender_id.hex(), algorithm="AES-CCM-16-64-128",
        kdf="HKDF-SHA-256")


@oscore_app.command("context")
def context(
    device: DeviceArg,
    public: Annotated[str, typer.Option(
        "--device-public", metavar="FILE",
        help="The device's X25519 or P-256 public key (PEM or DER; 'iotsec payload keygen' "
        "makes one).")],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace the device's context (its old keys stop working).")
                       ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Provision the OSCORE context of DEVICE with the gateway: prints the gateway's public
    key, the salt and both Sender IDs, from which the device derives the same keys."""
    key = read_input(public, MAX_KEY_FILE, "public key")
    with runtime() as rt:
        out = _out(provision_context(rt, device, key, replace=replace))
    if as_json:
        emit_json(out)
        return
    console.print(f"device:            {out.device_id}\n"
                  f"device sender id:  {out.device_sender_id}\n"
                  f"gateway sender id: {out.gateway_sender_id}\n"
                  f"salt:              {out.salt}\n"
                  f"algorithm:         {out.algorithm}, {out.kdf}\n"
                  f"gateway identity:  {out.gateway_id}", markup=False)
    console.print(out.gateway_public_key, markup=False, end="")
    err_console.print("The device derives its context from its private key and the gateway's "
                      "public key above (ECDH + HKDF).", markup=False)


@oscore_app.command("remove")
def remove(device: DeviceArg, as_json: JsonOpt = False) -> None:
    """Delete the OSCORE context of DEVICE: its protected requests are refused at once."""
    with runtime() as rt:
        remove_context(rt, device)
    if as_json:
        emit_json({"device_id": device, "removed": True})
        return
    err_console.print(f"Removed the OSCORE context of {device}.", markup=False)


@edhoc_app.command("credential")
def credential(as_json: JsonOpt = False) -> None:
    """Print the gateway's EDHOC credential (a CCS, RFC 8392, in hex): a device authenticates
    the gateway with it. Devices present a CCS by value holding their certificate's P-256
    key with their device id as subject (method 3, cipher suite 2)."""
    with runtime() as rt:
        encoded = edhoc_credential(rt, create=False)
    if as_json:
        emit_json({"subject": GATEWAY_ID, "ccs": encoded.hex(), "method": 3,
                   "cipher_suite": 2})
        return
    console.print(encoded.hex(), markup=False)


@edhoc_app.command("kid")
def kid(
    cert: Annotated[str, typer.Argument(metavar="CERT",
                                        help="The device's certificate (PEM or DER, - for "
                                        "standard input).")],
    as_json: JsonOpt = False,
) -> None:
    """Print the kid of a device certificate's key, for a device that names its CCS by kid
    (ID_CRED_I {4: kid}) rather than sending it by value: the first 8 bytes of the SHA-256
    of the key's SubjectPublicKeyInfo. The CCS is {2: device id, 8: {1: COSE_Key with this
    kid}}; the gateway finds the certificate by it."""
    subject, value = certificate_kid(read_input(cert, MAX_CERT_FILE, "certificate"))
    if as_json:
        emit_json({"subject": subject, "kid": value.hex()})
        return
    console.print(value.hex(), markup=False)
