"""``iotsec ca``: the CA hierarchy: the chain and trust bundle, the CAs and their states,
rotation and retirement."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from iotsec.app.broker.rollover import CaChange, import_ca, retire_ca, rotate_ca
from iotsec.app.pki.authorities import list_authorities
from iotsec.app.pki.bundles import chain_pem, trust_bundle_pem
from iotsec.app.pki.ceremony import (
    MAX_CRL_IMPORT_BYTES,
    MAX_KEY_FILE_BYTES,
    OFFLINE_ROOT_CRL_DAYS,
    import_root_crl,
    request_issuing,
    root_token_signer,
    sign_intermediate_offline,
    sign_root_crl_offline,
)
from iotsec.app.wire.ca import AuthorityOut, CaChangeOut, CrlOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt, OutputFileOpt
from iotsec.cli.output import (
    console,
    emit_json,
    err_console,
    plural,
    read_input,
    secret_input,
    table,
    when,
    write_output,
)
from iotsec.errors import InvalidInputError
from iotsec.pki.ca import MAX_CA_CERT_BYTES
from iotsec.pki.csr import MAX_CSR_BYTES
from iotsec.pki.keys import KeyType, Signer
from iotsec.pki.x509 import to_pem

__all__ = [
    "app", "bundle", "chain", "import_", "import_crl", "list_", "request", "retire",
    "root_token_config", "rotate", "sign_crl", "sign_intermediate"
]

if TYPE_CHECKING:
    from iotsec.custody.pkcs11_token import Pkcs11Config

app = typer.Typer(help="The certificate authorities.", no_args_is_help=True)

RootKeyOpt = Annotated[Path | None, typer.Option(
    "--root-key", help="The encrypted root key file (passphrase from "
    "IOTSEC_ROOT_KEY_PASSPHRASE or --passphrase-file).")]
RootTokenOpt = Annotated[str | None, typer.Option(
    "--root-token", help="Or: the PKCS#11 token of its own that keeps the root key (PIN from "
    "IOTSEC_ROOT_TOKEN_PIN; module from --pkcs11-module or IOTSEC_PKCS11_MODULE).")]
RootKeyLabelOpt = Annotated[str | None, typer.Option(
    "--root-key-label", help="With --root-token: the root key's label ('ca list').")]
ModuleOpt = Annotated[str | None, typer.Option("--pkcs11-module", help="PKCS#11 module.")]


def root_token_config(token_label: str, module: str | None) -> Pkcs11Config:
    """Where an offline root's own PKCS#11 token is: ``module`` (else
    IOTSEC_PKCS11_MODULE), the token label, the PIN from IOTSEC_ROOT_TOKEN_PIN (never an
    argument)."""
    # Deferred: python-pkcs11 is loaded only where a token is used (start-up time).
    from iotsec.custody.pkcs11_token import Pkcs11Config

    path = module or os.environ.get("IOTSEC_PKCS11_MODULE")
    pin = os.environ.get("IOTSEC_ROOT_TOKEN_PIN")
    if not path:
        raise InvalidInputError("no PKCS#11 module for the root's token",
                                hint="give --pkcs11-module or set IOTSEC_PKCS11_MODULE")
    if not pin:
        raise InvalidInputError("no PIN for the root's token", hint="set IOTSEC_ROOT_TOKEN_PIN")
    return Pkcs11Config(module=Path(path), token_label=token_label, pin=pin)


@contextmanager
def _root_key(root_key: Path | None, root_token: str | None, key_label: str | None,
              module: str | None) -> Iterator[bytes | Signer]:
    if (root_key is None) == (root_token is None):
        raise InvalidInputError("give the root key as --root-key FILE or --root-token LABEL")
    if root_key is not None:
        yield read_input(str(root_key), MAX_KEY_FILE_BYTES, "root key")
        return
    if not key_label:
        raise InvalidInputError("--root-token needs --root-key-label (see 'iotsec ca list')")
    with root_token_signer(root_token_config(root_token or "", module), key_label) as signer:
        yield signer


def _root_passphrase(root_key: Path | None, passphrase_file: Path | None) -> bytes:
    if root_key is None:
        return b""
    return secret_input("IOTSEC_ROOT_KEY_PASSPHRASE", passphrase_file,
                        "the root key passphrase")


BrokerDirOpt = Annotated[Path | None, typer.Option(
    "--broker-dir", help="The Mosquitto directory to re-render and reload (default: "
    "IOTSEC_BROKER_DIR; none: no broker is touched).")]


@app.command("chain")
def chain(
    output: OutputFileOpt = None,
    cross: Annotated[bool, typer.Option(
        "--cross", help="During a root rollover: the cross certificate before the root, "
        "for relying parties that trust only the old root (intermediates, not a CA "
        "file).")] = False,
) -> None:
    """Print the issuing chain in PEM: the active issuing CA, then the root."""
    with runtime() as rt:
        write_output(output, chain_pem(rt, cross=cross).encode("ascii"))


@app.command("bundle")
def bundle(
    output: OutputFileOpt = None,
) -> None:
    """Print the trust bundle in PEM: every CA trusted now (active and retiring issuing
    CAs, cross certificates, roots), what relying parties need during a rollover."""
    with runtime() as rt:
        write_output(output, trust_bundle_pem(rt).encode("ascii"))


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List the CAs: role, state (active, retiring, retired, expired), expiry, key type
    and how many certificates each issued."""
    with runtime() as rt:
        found = list_authorities(rt)
        now = rt.now()
    out = [AuthorityOut.from_domain(a, now) for a in found]
    if as_json:
        emit_json(out)
        return
    table(plural(len(out), "CA"), ["id", "role", "subject", "state", "not after", "key type",
                                   "issued"],
          [(a.id, a.role, a.subject, a.state + (" (key offline)" if a.key_offline else ""),
            when(a.not_after), a.key_type, a.certificates_issued) for a in out],
          ids=("id", "subject"))


def _report(change: CaChange, now: datetime, as_json: bool, verb: str) -> None:
    out = CaChangeOut.from_domain(change, now)
    if as_json:
        emit_json(out)
        return
    for a in out.changed:
        console.print(f"CA {a.id} ({a.role}) {a.subject}: {a.state}", markup=False)
    if out.broker_dir is None:
        console.print(f"{verb}; no broker directory configured (IOTSEC_BROKER_DIR): run "
                      "'iotsec broker mosquitto sync DIR' for each broker", markup=False)
    else:
        state = "reloaded" if out.broker_reloaded else "re-rendered (no running broker found)"
        console.print(f"{verb}; broker {out.broker_dir}: generation "
                      f"{out.broker_generation} {state}", markup=False)


@app.command("rotate")
def rotate(
    new_root: Annotated[bool, typer.Option(
        "--new-root", help="Also a new root, cross-signed by the current one.")] = False,
    no_cross: Annotated[bool, typer.Option(
        "--no-cross", help="With --new-root: no cross certificate (devices get the new "
        "root from the trust bundle).")] = False,
    key_type: Annotated[str | None, typer.Option(
        "--key-type", help="ecdsa-p256, ecdsa-p384 or rsa-3072 (default: the current "
        "issuing CA's)")] = None,
    broker_dir: BrokerDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new issuing CA (and with --new-root a new root); the previous ones become
    retiring: still trusted, their CRLs published, until 'iotsec ca retire ID'."""
    if no_cross and not new_root:
        raise InvalidInputError("--no-cross goes with --new-root")
    kind = None if key_type is None else KeyType.parse(key_type)
    with runtime() as rt:
        change = rotate_ca(rt, new_root=new_root, cross=not no_cross, key_type=kind,
                           broker_dir=broker_dir)
        now = rt.now()
    _report(change, now, as_json, "Rotated: new certificates come from the new issuing CA")


@app.command("retire")
def retire(
    authority_id: Annotated[int, typer.Argument(metavar="ID", help="A CA id (ca list).")],
    broker_dir: BrokerDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """End the overlap of a retiring CA: it leaves the chain and the trust bundle (its
    certificates stop authenticating); its CRL is served until it expires."""
    with runtime() as rt:
        change = retire_ca(rt, authority_id, broker_dir=broker_dir)
        now = rt.now()
    _report(change, now, as_json, f"Retired CA {authority_id}")


@app.command("request")
def request(
    output: OutputFileOpt = None,
    key_type: Annotated[str | None, typer.Option(
        "--key-type", help="ecdsa-p256, ecdsa-p384 or rsa-3072 (default: the current "
        "issuing CA's)")] = None,
) -> None:
    """Step 1 of the offline-root ceremony: a new issuing CA key (in custody) and its CSR
    (PEM), to be signed offline with 'iotsec ca sign-intermediate'."""
    kind = None if key_type is None else KeyType.parse(key_type)
    with runtime() as rt:
        made = request_issuing(rt, key_type=kind)
    write_output(output, to_pem(made.csr_der, "CERTIFICATE REQUEST"))
    err_console.print(f"Request {made.id} for {made.subject} (key {made.key_label}); sign it "
                      "offline, then 'iotsec ca import CERT'", markup=False)


@app.command("sign-intermediate")
def sign_intermediate(
    csr: Annotated[Path, typer.Argument(metavar="CSR", help="The request from 'ca request'.")],
    root_cert: Annotated[Path, typer.Option("--root-cert", help="The root certificate.")],
    root_key: RootKeyOpt = None,
    root_token: RootTokenOpt = None,
    root_key_label: RootKeyLabelOpt = None,
    pkcs11_module: ModuleOpt = None,
    passphrase_file: Annotated[Path | None, typer.Option(
        "--passphrase-file", help="A file holding the root key passphrase.")] = None,
    output: OutputFileOpt = None,
) -> None:
    """Step 2, on the offline machine (no home needed): sign the CSR as an issuing CA
    with the root key; prints the certificate (PEM)."""
    passphrase = _root_passphrase(root_key, passphrase_file)
    with _root_key(root_key, root_token, root_key_label, pkcs11_module) as key:
        der = sign_intermediate_offline(
            root_key=key, passphrase=passphrase,
            root_cert=read_input(str(root_cert), MAX_CA_CERT_BYTES, "root certificate"),
            csr=read_input(str(csr), MAX_CSR_BYTES, "CSR"), now=datetime.now(UTC))
    write_output(output, to_pem(der, "CERTIFICATE"))


@app.command("import")
def import_(
    certificate: Annotated[Path, typer.Argument(metavar="CERT", help="The certificate "
                                                "'ca sign-intermediate' made.")],
    broker_dir: BrokerDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Step 3: install the signed certificate as the active issuing CA (the previous one
    becomes retiring). Refused, with nothing written, unless it is a CA that may sign,
    valid now, issued by the root and certifying the key of a pending request."""
    data = read_input(str(certificate), MAX_CA_CERT_BYTES, "certificate")
    with runtime() as rt:
        change = import_ca(rt, data, broker_dir=broker_dir)
        now = rt.now()
    _report(change, now, as_json, "Imported: new certificates come from the new issuing CA")


@app.command("sign-crl")
def sign_crl(
    root_cert: Annotated[Path, typer.Option("--root-cert", help="The root certificate.")],
    root_key: RootKeyOpt = None,
    root_token: RootTokenOpt = None,
    root_key_label: RootKeyLabelOpt = None,
    pkcs11_module: ModuleOpt = None,
    days: Annotated[int, typer.Option("--days", help="Validity (nextUpdate).")
                    ] = OFFLINE_ROOT_CRL_DAYS,
    passphrase_file: Annotated[Path | None, typer.Option(
        "--passphrase-file", help="A file holding the root key passphrase.")] = None,
    output: OutputFileOpt = None,
) -> None:
    """On the offline machine (no home needed): the offline root's next CRL (PEM), to
    install with 'iotsec ca import-crl' before the current one expires."""
    passphrase = _root_passphrase(root_key, passphrase_file)
    with _root_key(root_key, root_token, root_key_label, pkcs11_module) as key:
        der = sign_root_crl_offline(
            root_key=key, passphrase=passphrase,
            root_cert=read_input(str(root_cert), MAX_CA_CERT_BYTES, "root certificate"),
            now=datetime.now(UTC), days=days)
    write_output(output, to_pem(der, "X509 CRL"))


@app.command("import-crl")
def import_crl(
    crl_file: Annotated[Path, typer.Argument(metavar="CRL", help="From 'ca sign-crl'.")],
    as_json: JsonOpt = False,
) -> None:
    """Publish a CRL the offline root signed: checked (its signature, a higher number, in
    its validity), then served and given to the broker at its next sync."""
    data = read_input(str(crl_file), MAX_CRL_IMPORT_BYTES, "CRL")
    with runtime() as rt:
        published = import_root_crl(rt, data)
    if as_json:
        emit_json(CrlOut.from_domain(published))
        return
    console.print(f"Published the root's CRL number {published.number}, valid until "
                  f"{when(published.next_update)}", markup=False)
