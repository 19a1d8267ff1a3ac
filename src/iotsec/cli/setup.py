"""``iotsec init``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iotsec.app.pki.ceremony import MAX_KEY_FILE_BYTES
from iotsec.app.setup import ImportedCa, OfflineRoot, init_home
from iotsec.cli.ca import root_token_config
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import console, emit_json, err_console, read_input, secret_input
from iotsec.config import Settings
from iotsec.errors import InvalidInputError
from iotsec.pki.ca import MAX_CA_CERT_BYTES
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
    offline_root: Annotated[bool, typer.Option(
        "--offline-root", help="Keep the root key out of the home: it is written encrypted "
        "to --root-key-out (passphrase from IOTSEC_ROOT_KEY_PASSPHRASE or "
        "--root-passphrase-file) and new issuing CAs are signed offline "
        "('iotsec ca request', 'ca sign-intermediate', 'ca import').")] = False,
    root_key_out: Annotated[Path | None, typer.Option(
        "--root-key-out", help="With --offline-root: the new file for the encrypted root "
        "key.")] = None,
    root_token: Annotated[str | None, typer.Option(
        "--root-token", help="With --offline-root: make and keep the root key in this "
        "PKCS#11 token of its own (module from --pkcs11-module or IOTSEC_PKCS11_MODULE, PIN "
        "from IOTSEC_ROOT_TOKEN_PIN) instead of a file.")] = None,
    root_passphrase_file: Annotated[Path | None, typer.Option(
        "--root-passphrase-file", help="A file holding the root key passphrase (else "
        "IOTSEC_ROOT_KEY_PASSPHRASE).")] = None,
    import_ca: Annotated[Path | None, typer.Option(
        "--import-ca", help="Adopt an existing issuing CA (PEM or DER certificate) instead "
        "of making one.")] = None,
    import_root: Annotated[Path | None, typer.Option(
        "--import-root", help="With --import-ca: the root certificate that issued it.")] = None,
    import_key: Annotated[Path | None, typer.Option(
        "--import-key", help="With --import-ca: its private key (PEM; encrypted PKCS#8 with "
        "IOTSEC_IMPORT_KEY_PASSPHRASE or --import-key-passphrase-file).")] = None,
    import_key_passphrase_file: Annotated[Path | None, typer.Option(
        "--import-key-passphrase-file", help="A file holding the imported key's "
        "passphrase.")] = None,
    import_key_label: Annotated[str | None, typer.Option(
        "--import-key-label", help="With --import-ca on a PKCS#11 home: the label of its key "
        "in the token.")] = None,
    store_passphrase: Annotated[bool, typer.Option(
        "--store-passphrase", help="The embedded default: generate the CA passphrase and "
        "store it in the home, next to the keys (whoever copies the home has both). Without "
        "it, the passphrase comes from IOTSEC_CA_PASSPHRASE and is stored nowhere.")] = False,
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
    settings = Settings(**overrides)
    offline = None
    if offline_root:
        if (root_key_out is None) == (root_token is None):
            raise InvalidInputError("--offline-root needs --root-key-out FILE or "
                                    "--root-token LABEL")
        if root_token is not None:
            offline = OfflineRoot(token=root_token_config(root_token, pkcs11_module))
        else:
            offline = OfflineRoot(root_key_out, secret_input(
                "IOTSEC_ROOT_KEY_PASSPHRASE", root_passphrase_file, "the root key passphrase"))
    elif root_key_out is not None or root_passphrase_file is not None or root_token:
        raise InvalidInputError("--root-key-out and --root-token go with --offline-root")
    imported = None
    if import_ca is not None:
        if import_root is None:
            raise InvalidInputError("--import-ca needs --import-root ROOT_CERT")
        passphrase = None
        if import_key is not None:
            passphrase = secret_input("IOTSEC_IMPORT_KEY_PASSPHRASE",
                                      import_key_passphrase_file, "", required=False)
        imported = ImportedCa(
            certificate=read_input(str(import_ca), MAX_CA_CERT_BYTES, "CA certificate"),
            root=read_input(str(import_root), MAX_CA_CERT_BYTES, "root certificate"),
            key=None if import_key is None else read_input(str(import_key),
                                                           MAX_KEY_FILE_BYTES, "key"),
            key_passphrase=passphrase, key_label=import_key_label)
    elif any(v is not None for v in (import_root, import_key, import_key_label)):
        raise InvalidInputError("--import-root, --import-key and --import-key-label go with "
                                "--import-ca")
    result = init_home(settings, key_type=KeyType.parse(key_type), exist_ok=exist_ok,
                       offline_root=offline, imported=imported,
                       store_passphrase=store_passphrase)
    # TLS stacks load their server key from a file, so a server's TLS key is an encrypted
    # file in the home on every keystore; a token keeps the CA keys and the KEKs.
    tls_keys = str(settings.keys_dir)
    if as_json:
        emit_json({"home": result.home, "created": result.created,
                   "root": result.root.subject.rfc4514_string(),
                   "issuing": result.issuing.certificate.subject.rfc4514_string(),
                   "keystore": settings.keystore, "tls_server_keys": tls_keys,
                   "ca_passphrase": "home-file" if result.passphrase_in_home
                   else "environment",
                   "ca_passphrase_file": result.passphrase_file,
                   "root_key": "offline" if result.root_key_file or result.imported
                   else "home", "root_key_file": result.root_key_file,
                   "imported": result.imported, "admin_token": result.admin_token})
        return
    if not result.created:
        console.print(f"iotsec home {result.home} is already initialised")
        return
    console.print(f"Initialised iotsec home {result.home}")
    console.print(f"  root CA:    {result.root.subject.rfc4514_string()}", markup=False)
    console.print(f"  issuing CA: {result.issuing.certificate.subject.rfc4514_string()}"
                  + (" (imported)" if result.imported else ""), markup=False)
    if result.root_key_file:
        console.print(f"  root key:   offline, encrypted in {result.root_key_file} (not in the "
                      "home): move it to offline storage", markup=False)
    elif result.imported:
        console.print("  root key:   with its owner (not in the home)", markup=False)
    if result.passphrase_in_home:
        console.print(f"  CA passphrase: the embedded default, generated and stored in "
                      f"{result.passphrase_file}, next to the keys (--store-passphrase; set "
                      "IOTSEC_CA_PASSPHRASE instead to keep it out of the home)",
                      markup=False)
    else:
        console.print("  CA passphrase: from IOTSEC_CA_PASSPHRASE, not stored in the home",
                      markup=False)
    if settings.keystore == "pkcs11":
        console.print(f"  CA keys:    in the PKCS#11 token {settings.pkcs11_token or ''}",
                      markup=False)
        console.print(f"  TLS keys:   the servers' TLS keys (iotsec serve) are ordinary keys "
                      f"iotsec generates, kept encrypted in {tls_keys}", markup=False)
    err_console.print("\nAdmin API token (shown once, stored only as a hash, valid 90 days; "
                      "'iotsec token create NAME --scope admin' makes another):")
    console.print(f"  {result.admin_token}", markup=False, soft_wrap=True)
