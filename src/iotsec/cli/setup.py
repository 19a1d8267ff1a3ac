"""``iotsec init``."""

from __future__ import annotations

from typing import Annotated

import typer

from iotsec.app.setup import init_home
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console
from iotsec.config import Settings
from iotsec.pki.keys import KeyType

__all__ = ["init"]


def init(
    key_type: Annotated[str, typer.Option("--key-type", help="ecdsa-p256 (default), "
                                          "ecdsa-p384 or rsa-3072")] = "ecdsa-p256",
    exist_ok: Annotated[bool, typer.Option("--exist-ok",
                                           help="Succeed quietly if the home exists.")] = False,
    keystore: Annotated[str | None, typer.Option(
        "--keystore", help="file (default: encrypted key files in the home) or pkcs11 "
        "(non-extractable keys in a token; the PIN comes from IOTSEC_PKCS11_PIN)")] = None,
    pkcs11_module: Annotated[str | None, typer.Option(
        "--pkcs11-module", help="PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so")] = None,
    token_label: Annotated[str | None, typer.Option("--token-label",
                                                    help="Label of the PKCS#11 token.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the home: store, root CA, issuing CA and the first admin API token."""
    overrides: dict[str, str] = {}
    if keystore is not None:
        overrides["keystore"] = keystore
    if pkcs11_module is not None:
        overrides["pkcs11_module"] = pkcs11_module
    if token_label is not None:
        overrides["pkcs11_token"] = token_label
    # A value that is not allowed is a ConfigError naming it (see iotsec.config).
    settings = Settings(**overrides)  # type: ignore[arg-type]
    result = init_home(settings, key_type=KeyType.parse(key_type), exist_ok=exist_ok)
    # TLS stacks load their server key from a file, so a server's TLS key is an encrypted
    # file in the home on every keystore; a token keeps the CA keys and the KEKs.
    tls_keys = str(settings.keys_dir)
    if as_json:
        emit_json({"home": result.home, "created": result.created,
                   "root": result.root.certificate.subject.rfc4514_string(),
                   "issuing": result.issuing.certificate.subject.rfc4514_string(),
                   "keystore": settings.keystore, "tls_server_keys": tls_keys,
                   "admin_token": result.admin_token})
        return
    if not result.created:
        console.print(f"iotsec home {result.home} is already initialised")
        return
    console.print(f"Initialised iotsec home {result.home}")
    console.print(f"  root CA:    {result.root.certificate.subject.rfc4514_string()}")
    console.print(f"  issuing CA: {result.issuing.certificate.subject.rfc4514_string()}")
    if settings.keystore == "pkcs11":
        console.print(f"  CA keys:    in the PKCS#11 token {settings.pkcs11_token or ''}",
                      markup=False)
        console.print(f"  TLS keys:   the servers' TLS keys (iotsec serve) are ordinary keys "
                      f"iotsec generates, kept encrypted in {tls_keys}", markup=False)
    err_console.print("\nAdmin API token (shown once, stored only as a hash, valid 90 days; "
                      "'iotsec token create NAME --scope admin' makes another):")
    console.print(f"  {result.admin_token}", markup=False, soft_wrap=True)
