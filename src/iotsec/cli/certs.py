"""``iotsec cert``: issue, list, show, revoke and renew device certificates; replace one of
iotsec's own (``revoke --infrastructure``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iotsec.app.pki import cert_records
from iotsec.app.wire.identity import (
    CertificateOut,
    KeygenFilesOut,
    ReplacementOut,
    RevokedOut,
)
from iotsec.cli.context import runtime
from iotsec.cli.identity_spec import CERT_LIST, DEFAULT_LIMIT, expiry_window, list_certificates_of
from iotsec.cli.options import DeviceArg, JsonOpt, LimitOpt, OutputFileOpt
from iotsec.cli.output import (
    console,
    emit_json,
    err_console,
    read_input,
    table,
    when,
    write_output,
)
from iotsec.errors import AlreadyRevokedError
from iotsec.timeutil import parse_duration

if TYPE_CHECKING:
    from iotsec.app.pki.cert_records import CertificateRecord
    from iotsec.pki.keys import KeyType
    from iotsec.pki.reasons import RevocationReason

# The commands that issue, revoke or replace import those services when they run: the read
# commands (list, show) start without them (and without what they import: the broker, the CA
# signer, CSR parsing).

__all__ = ["DaysOpt", "SharedKeyOpt", "app", "import_", "issue", "list_", "renew", "revoke", "show"]

app = typer.Typer(help="Device certificates.", no_args_is_help=True)
DaysOpt = Annotated[int | None, typer.Option("--days", help="Validity in days (default: the "
                                             "profile's, 365).")]
SharedKeyOpt = Annotated[bool, typer.Option(
    "--allow-shared-key", help="Issue even if another identity's valid certificate "
    "certifies the same key (recorded as a cert.shared-key event).")]


def _print_issued(c: CertificateRecord, output: str | None, as_json: bool, now: Any) -> None:
    if as_json:
        if output:
            write_output(output, c.pem.encode("ascii"))
        emit_json(CertificateOut.from_domain(c, now, with_pem=True))
        return
    write_output(output, c.pem.encode("ascii"))
    if output:
        err_console.print(f"Issued {c.serial} for {c.device_id}, valid until "
                          f"{when(c.not_after)}; written to {output}", markup=False)


@app.command("issue")
def issue(
    device_id: DeviceArg,
    csr: Annotated[str | None, typer.Option("--csr", help="CSR file, PEM or DER ('-' = stdin).")
                   ] = None,
    keygen: Annotated[bool, typer.Option("--keygen", help="Generate the device key here.")
                      ] = False,
    key_type: Annotated[str, typer.Option("--key-type", help="With --keygen: ecdsa-p256, "
                                          "ecdsa-p384 or rsa-3072.")] = "ecdsa-p256",
    days: DaysOpt = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="FILE (with --csr) or "
                                               "DIR (with --keygen).")] = None,
    allow_shared_key: SharedKeyOpt = False,
    profile: Annotated[str | None, typer.Option(
        "--profile", metavar="NAME", help="Certificate profile (default: the device's, its "
        "groups', else device).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a client certificate from a CSR, or with a server-generated key (--keygen)."""
    from iotsec.app.pki import issuance
    from iotsec.pki.csr import MAX_CSR_BYTES
    from iotsec.pki.keys import KeyType

    if keygen == (csr is not None):
        raise typer.BadParameter("give exactly one of --csr FILE or --keygen")
    if keygen:
        _issue_keygen(device_id, KeyType.parse(key_type), days, output, as_json, profile)
        return
    assert csr is not None
    data = read_input(csr, MAX_CSR_BYTES, "CSR")
    with runtime() as rt:
        record = issuance.issue_from_csr(rt, device_id, data, days=days, profile=profile,
                                         allow_shared_key=allow_shared_key, actor="cli")
        _print_issued(record, output, as_json, rt.now())


def _issue_keygen(device_id: str, key_type: KeyType, days: int | None, output: str | None,
                  as_json: bool, profile: str | None) -> None:
    from iotsec.app.pki.keygen import issue_keygen_files

    if output is None:
        raise typer.BadParameter("--keygen needs -o DIR to write the key and certificate to")
    env_pass = os.environ.get("IOTSEC_P12_PASSPHRASE")
    passphrase = env_pass or secrets.token_urlsafe(18)
    with runtime() as rt:
        done = issue_keygen_files(rt, device_id, Path(output), key_type=key_type, days=days,
                                  p12_passphrase=passphrase.encode("utf-8"), profile=profile)
        now = rt.now()
    if as_json:
        issued = CertificateOut.from_domain(done.certificate, now, with_pem=True)
        emit_json(KeygenFilesOut(**issued.model_dump(),
                                 files={path.name: str(path) for path in done.files.values()},
                                 pkcs12_passphrase=None if env_pass else passphrase,
                                 resumed=done.resumed))
        return
    if done.resumed:
        err_console.print("Finished an interrupted '--keygen' with the key it left in "
                          f"{done.files['key']}", markup=False, soft_wrap=True)
    console.print(f"Issued {done.certificate.serial} for {device_id}; wrote "
                  f"{', '.join(str(p) for p in done.files.values())}", markup=False)
    if not env_pass:
        err_console.print("PKCS#12 passphrase (shown once):", markup=False)
        console.print(f"  {passphrase}", markup=False)


@app.command("list")
def list_(
    device: Annotated[str | None, typer.Option(
        CERT_LIST.flag("device"), help="Only this device.")] = None,
    expiring_within: Annotated[str | None, typer.Option(
        CERT_LIST.flag("expiring_within"),
        help="Only unrevoked ones expiring within e.g. 30d.")] = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    as_json: JsonOpt = False,
) -> None:
    """List certificates (newest first, or soonest to expire with --expiring-within)."""
    window = expiry_window(expiring_within)
    with runtime() as rt:
        list_certificates_of(rt, device, window, limit, as_json)


@app.command("show")
def show(
    serial: Annotated[str, typer.Argument(metavar="SERIAL", help="Hex, as openssl prints it.")],
    pem: Annotated[bool, typer.Option("--pem", help="Print the certificate in PEM.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one certificate."""
    with runtime() as rt:
        c = cert_records.get_certificate(rt, serial)
        now = rt.now()
    if pem:
        write_output(None, c.pem.encode("ascii"))
    elif as_json:
        emit_json(CertificateOut.from_domain(c, now, with_pem=True))
    else:
        fields = CertificateOut.from_domain(c, now).model_dump(exclude={"pem"})
        table(f"certificate {c.serial}", ["field", "value"],
              [(k, when(v) if hasattr(v, "strftime") else v) for k, v in fields.items()])


@app.command("revoke")
def revoke(
    serial: Annotated[str | None, typer.Argument(metavar="SERIAL", help="Hex serial.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Revoke all of this device's "
                                               "certificates.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="RFC 5280 reason, e.g. "
                                        "keyCompromise, superseded, cessationOfOperation.")
                      ] = "unspecified",
    infrastructure: Annotated[bool, typer.Option(
        "--infrastructure", help="SERIAL is one of iotsec's own certificates (the API's or "
        "the broker's server certificate, the broker probe or canary): revoke it and issue "
        "its replacement at once.")] = False,
    broker_dir: Annotated[Path | None, typer.Option(
        "--broker-dir", metavar="DIR", help="With --infrastructure: the broker directory to "
        "sync (default: IOTSEC_BROKER_DIR).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a device certificate by serial, or every certificate of a device; with
    --infrastructure, replace one of iotsec's own certificates."""
    from iotsec.app.pki import revocation
    from iotsec.pki.reasons import RevocationReason

    if (serial is None) == (device is None):
        raise typer.BadParameter("give either SERIAL or --device ID")
    if (infrastructure or broker_dir is not None) and serial is None:
        raise typer.BadParameter("--infrastructure takes a SERIAL, not --device")
    if broker_dir is not None and not infrastructure:
        raise typer.BadParameter("--broker-dir goes with --infrastructure")
    why = RevocationReason.parse(reason)
    if infrastructure:
        assert serial is not None
        _replace_infrastructure(serial, why, broker_dir, as_json)
        return
    with runtime() as rt:
        if serial is not None:
            try:
                serials = [revocation.revoke(rt, serial, why, actor="cli").serial]
            except AlreadyRevokedError as done:
                # A retry of a revocation that went through: the goal is reached.
                _already_revoked(done, as_json)
                return
        else:
            assert device is not None
            serials = revocation.revoke_device(rt, device, why, actor="cli")
    if as_json:
        emit_json(RevokedOut.from_domain(serials, why))
    elif serials:
        for s in serials:
            console.print(f"Revoked {s} ({why.name})", markup=False)
    else:
        console.print(f"Device {device} has no certificate left to revoke", markup=False)


def _replace_infrastructure(serial: str, why: RevocationReason, broker_dir: Path | None,
                            as_json: bool) -> None:
    from iotsec.app.broker.infrastructure import replace_infrastructure

    with runtime() as rt:
        done = replace_infrastructure(rt, serial, why, broker_dir=broker_dir)
    if as_json:
        emit_json(ReplacementOut.from_domain(done, rt.now()))
        return
    console.print(f"Revoked {done.revoked.serial} ({done.revoked.kind}, {why.name})",
                  markup=False)
    for r in done.replaced:
        console.print(f"  replaced in {r.holder} by {r.serial}", markup=False)
    if any(r.holder.startswith("api ") for r in done.replaced):
        console.print("  a running 'iotsec serve' serves the new certificate within seconds",
                      markup=False)
    if not done.replaced:
        console.print("  nothing here held it (a broker directory not given is healed by its "
                      "next 'iotsec broker mosquitto sync')", markup=False)


def _already_revoked(done: AlreadyRevokedError, as_json: bool) -> None:
    if as_json:
        emit_json(RevokedOut(revoked=[], already_revoked=[done.serial], reason=done.reason))
    else:
        console.print(f"Certificate {done.serial} is already revoked ({done.reason}); "
                      "nothing to do", markup=False)


@app.command("renew")
def renew(
    serial: Annotated[str, typer.Argument(metavar="SERIAL")],
    csr: Annotated[str, typer.Option("--csr", help="The new CSR, PEM or DER ('-' = stdin).")],
    days: DaysOpt = None,
    grace: Annotated[str | None, typer.Option("--grace", help="Keep the old certificate "
                                              "valid this long (e.g. 7d).")] = None,
    output: OutputFileOpt = None,
    allow_shared_key: SharedKeyOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Issue a replacement certificate; the old one is revoked as superseded."""
    from iotsec.app.pki import issuance
    from iotsec.pki.csr import MAX_CSR_BYTES

    data = read_input(csr, MAX_CSR_BYTES, "CSR")
    grace_period = parse_duration(grace) if grace else None
    with runtime() as rt:
        record = issuance.renew(rt, serial, data, days=days, grace=grace_period,
                                allow_shared_key=allow_shared_key, actor="cli")
        _print_issued(record, output, as_json, rt.now())


@app.command("import")
def import_(
    files: Annotated[list[str], typer.Argument(metavar="FILE...", help="Certificates this CA "
                                               "issued: PEM (several per file) or DER.")],
    as_json: JsonOpt = False,
) -> None:
    """Register certificates this CA issued that the store does not know (after a restore:
    those issued after the backup), so that they can be revoked."""
    from iotsec.app.identity.cert_import import MAX_CERT_FILE, import_certificates

    contents = [(name, read_input(name, MAX_CERT_FILE, "certificate file")) for name in files]
    with runtime() as rt:
        result = import_certificates(rt, contents)
    if as_json:
        emit_json({"imported": [{"serial": s, "device_id": d} for s, d in result.imported],
                   "already_known": result.already_known,
                   "devices_created": result.devices_created})
        return
    for serial, device_id in result.imported:
        console.print(f"Imported {serial}" + (f" for {device_id}" if device_id else ""),
                      markup=False)
    if result.already_known:
        console.print(f"Already known: {', '.join(result.already_known)}", markup=False)
    if result.devices_created:
        err_console.print("Registered again (active, default role; restore their groups and "
                          f"roles): {', '.join(result.devices_created)}", markup=False)
