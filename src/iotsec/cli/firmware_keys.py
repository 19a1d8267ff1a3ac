"""``iotsec firmware keygen``, ``import-key`` and ``public-key``: firmware signing keys, in
key files (encrypted PKCS#8) or in the home's key custody."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from iotsec.app.ota import firmware as service
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console
from iotsec.errors import FirmwareKeyError
from iotsec.firmware.image_keys import FirmwareKeyType, TrustedKey, public_pem

__all__ = ["import_key", "key_json", "keygen", "public_key", "signing_passphrase"]


def signing_passphrase(*, new: bool) -> bytes:
    """The signing-key passphrase: the environment, else a prompt on a terminal."""
    value = os.environ.get(service.PASSPHRASE_ENV)
    if value:
        return value.encode("utf-8")
    if sys.stdin.isatty():
        text = typer.prompt("New key passphrase" if new else "Key passphrase",
                            hide_input=True, confirmation_prompt=new, err=True)
        return str(text).encode("utf-8")
    raise FirmwareKeyError("no passphrase for the firmware signing key",
                           hint=f"set {service.PASSPHRASE_ENV}, or run in a terminal to be "
                           "prompted" + (", or use --generate-passphrase" if new else ""))


def key_json(key: TrustedKey) -> dict[str, Any]:
    """A key as the ``--json`` output of the firmware commands names it."""
    return {"type": key.key_type.value, "key_id": key.key_id, "key_hash": key.key_hash.hex()}


def keygen(
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", "-k", "--key",
        help="Standalone key file to write (encrypted PKCS#8), instead of --label.")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="Keep the key in the home's key custody under this label (file key "
        "store or PKCS#11 token, as 'iotsec init' configured).")] = None,
    key_type: Annotated[str, typer.Option("-t", "--type", help="ecdsa-p256, ed25519, "
                                          "rsa-2048 or rsa-3072.")] = "ecdsa-p256",
    public_out: Annotated[Path | None, typer.Option("--public-out", help="Also write the "
                                                    "public key (PEM) here.")] = None,
    generate_passphrase: Annotated[bool, typer.Option(
        "--generate-passphrase", help="Generate a strong passphrase and print it once "
        "(key files only).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a firmware signing key: in key custody (--label) or in a key file (-o).

    A key file is encrypted under a passphrase from IOTSEC_FIRMWARE_KEY_PASSPHRASE, a
    prompt on a terminal, or --generate-passphrase; there is no default. A custody key
    never leaves its store (inside a PKCS#11 token it is non-extractable); its public key
    goes to --public-out or, without it, to standard output."""
    kind = FirmwareKeyType.parse(key_type)
    if (output is None) == (label is None):
        raise typer.BadParameter("give either --label (key custody) or -o KEY (a key file)",
                                 param_hint="--label / -o")
    if label is not None:
        if generate_passphrase:
            raise typer.BadParameter("a custody key has no passphrase of its own",
                                     param_hint="--generate-passphrase")
        _keygen_custody(label, kind, public_out, as_json)
        return
    assert output is not None
    generated: str | None = None
    if generate_passphrase:
        if os.environ.get(service.PASSPHRASE_ENV):
            raise typer.BadParameter(f"{service.PASSPHRASE_ENV} is set; drop "
                                     "--generate-passphrase or unset it")
        generated = secrets.token_urlsafe(24)
        passphrase = generated.encode("ascii")
    else:
        passphrase = signing_passphrase(new=True)
    key = service.generate_key(output, kind, passphrase, public_out=public_out)
    if as_json:
        emit_json({**key_json(key), "key": str(output),
                   "public_key": str(public_out) if public_out else None,
                   "passphrase": generated})
        return
    console.print(f"Wrote {kind} signing key {key.key_id} to {output} (encrypted PKCS#8)"
                  + (f"; public key to {public_out}" if public_out else ""), markup=False)
    if generated is not None:
        err_console.print("Key passphrase (shown once; keep it with the key's custodian):",
                          markup=False)
        console.print(f"  {generated}", markup=False)


def _keygen_custody(label: str, kind: FirmwareKeyType, public_out: Path | None,
                    as_json: bool) -> None:
    with runtime() as rt:
        key = service.generate_custody_key(rt, label, kind, public_out=public_out)
        backend = rt.settings.keystore
    pem = public_pem(key.public_key).decode("ascii")
    if as_json:
        emit_json({**key_json(key), "label": label, "backend": backend,
                   "public_key": str(public_out) if public_out else None,
                   "public_key_pem": pem})
        return
    err_console.print(f"Generated {kind} signing key {label!r} ({key.key_id}) in the "
                      f"{backend} key store"
                      + (f"; public key written to {public_out}" if public_out else ""),
                      markup=False, soft_wrap=True)
    if public_out is None:
        sys.stdout.write(pem)


def import_key(
    source: Annotated[Path, typer.Argument(metavar="IN", help="PEM private key, e.g. from "
                                           "'imgtool keygen'.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Encrypted key to write.")],
    as_json: JsonOpt = False,
) -> None:
    """Encrypt an existing signing key (unencrypted PEM) under the firmware passphrase."""
    key = service.import_key(source, output, signing_passphrase(new=True))
    if as_json:
        emit_json({**key_json(key), "key": str(output)})
        return
    console.print(f"Wrote {key.key_type} signing key {key.key_id} to {output} "
                  "(encrypted PKCS#8); remove the unencrypted original", markup=False)


def public_key(
    key_file: Annotated[Path | None, typer.Argument(
        metavar="[KEY]", help="Signing key or public key file (or use --label).")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="A firmware key in the home's key custody.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the PEM here "
                                                "(default: print it).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export the public key of a signing key (PEM), and show its MCUboot key hash."""
    if (key_file is None) == (label is None):
        raise typer.BadParameter("give either a KEY file or --label", param_hint="KEY / --label")
    if label is not None:
        with runtime() as rt:
            key = service.custody_public_key(rt, label)
    else:
        assert key_file is not None
        key = service.public_key_of(key_file, lambda: signing_passphrase(new=False))
    if output is not None:
        service.export_public_key(key, output)
    if as_json:
        emit_json({**key_json(key), "public_key": str(output) if output else None})
    elif output is None:
        sys.stdout.write(public_pem(key.public_key).decode("ascii"))
    else:
        console.print(f"Wrote the public key of {key.key_type} key {key.key_id} to {output}; "
                      f"key hash {key.key_hash.hex()}", markup=False)

