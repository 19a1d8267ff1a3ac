"""``iotsec cert``: issue, list, show, revoke and renew device certificates."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from iotsec.app.pki import certs as service
from iotsec.app.pki.certs import CertificateRecord
from iotsec.cli.context import runtime
from iotsec.cli.options import DeviceArg, JsonOpt, LimitOpt, OutputFileOpt
from iotsec.cli.output import console, emit_json, err_console, read_input, table, when, write_output
from iotsec.errors import InvalidInputError
from iotsec.filesystem import write_private_file
from iotsec.pki.crl import RevocationReason
from iotsec.pki.csr import MAX_CSR_BYTES
from iotsec.pki.keys import KeyType
from iotsec.timeutil import parse_duration

app = typer.Typer(help="Device certificates.", no_args_is_help=True)
DaysOpt = Annotated[int | None, typer.Option("--days", help="Validity in days (default: the "
                                             "profile's, 365).")]
SharedKeyOpt = Annotated[bool, typer.Option(
    "--allow-shared-key", help="Issue even if another identity's valid certificate "
    "certifies the same key (recorded as a cert.shared-key event).")]


def cert_json(c: CertificateRecord, now: Any) -> dict[str, Any]:
    return {"serial": c.serial, "device_id": c.device_id, "subject": c.subject,
            "kind": c.kind, "profile": c.profile, "status": c.status(now),
            "not_before": c.not_before, "not_after": c.not_after, "sha256": c.sha256,
            "revoked_at": c.revoked_at,
            "revocation_reason": c.revocation_reason.name
            if c.revocation_reason is not None else None,
            "replaced_by": c.replaced_by}


def _print_issued(c: CertificateRecord, output: str | None, as_json: bool, now: Any) -> None:
    if as_json:
        data = cert_json(c, now)
        data["pem"] = c.pem
        if output:
            write_output(output, c.pem.encode("ascii"))
        emit_json(data)
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
    as_json: JsonOpt = False,
) -> None:
    """Issue a client certificate from a CSR, or with a server-generated key (--keygen)."""
    if keygen == (csr is not None):
        raise typer.BadParameter("give exactly one of --csr FILE or --keygen")
    if keygen:
        _issue_keygen(device_id, KeyType.parse(key_type), days, output, as_json)
        return
    assert csr is not None
    data = read_input(csr, MAX_CSR_BYTES, "CSR")
    with runtime() as rt:
        record = service.issue_from_csr(rt, device_id, data, days=days,
                                        allow_shared_key=allow_shared_key)
        _print_issued(record, output, as_json, rt.now())


def _issue_keygen(device_id: str, key_type: KeyType, days: int | None, output: str | None,
                  as_json: bool) -> None:
    if output is None:
        raise typer.BadParameter("--keygen needs -o DIR to write the key and certificate to")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{output} exists and is not a directory",
                                hint="give a new or empty directory with -o")
    files = {name: out / name for name in
             (f"{device_id}.key", f"{device_id}.crt", "chain.pem", f"{device_id}.p12")}
    clash = [str(p) for p in files.values() if p.exists()]
    if clash:
        raise InvalidInputError(f"{clash[0]} already exists; nothing was issued",
                                hint="choose another directory with -o")
    env_pass = os.environ.get("IOTSEC_P12_PASSPHRASE")
    passphrase = env_pass or secrets.token_urlsafe(18)
    with runtime() as rt:
        bundle = service.issue_with_keygen(rt, device_id, key_type=key_type, days=days,
                                           p12_passphrase=passphrase.encode("utf-8"))
        now = rt.now()
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_file(files[f"{device_id}.key"], bundle.key_pem)
    write_private_file(files[f"{device_id}.p12"], bundle.pkcs12)
    files[f"{device_id}.crt"].write_text(bundle.certificate.pem)
    files["chain.pem"].write_text(bundle.chain_pem)
    if as_json:
        data = cert_json(bundle.certificate, now)
        data["files"] = {k: str(v) for k, v in files.items()}
        data["pkcs12_passphrase"] = None if env_pass else passphrase
        emit_json(data)
        return
    console.print(f"Issued {bundle.certificate.serial} for {device_id}; wrote "
                  f"{', '.join(str(p) for p in files.values())}", markup=False)
    if not env_pass:
        err_console.print("PKCS#12 passphrase (shown once):", markup=False)
        console.print(f"  {passphrase}", markup=False)


@app.command("list")
def list_(
    device: Annotated[str | None, typer.Option("--device", help="Only this device.")] = None,
    expiring_within: Annotated[str | None, typer.Option(
        "--expiring-within", help="Only unrevoked ones expiring within e.g. 30d.")] = None,
    limit: LimitOpt = 1000,
    as_json: JsonOpt = False,
) -> None:
    """List certificates (newest first, or soonest to expire with --expiring-within)."""
    window = parse_duration(expiring_within) if expiring_within else None
    with runtime() as rt:
        found = service.list_certificates(rt, device_id=device, expiring_within=window,
                                          limit=limit)
        now = rt.now()
    if as_json:
        emit_json([cert_json(c, now) for c in found])
        return
    table(f"{len(found)} certificates", ["serial", "device", "status", "not after", "reason"],
          [(c.serial, c.device_id or f"({c.kind})", c.status(now), when(c.not_after),
            c.revocation_reason.name if c.revocation_reason is not None else "")
           for c in found])


@app.command("show")
def show(
    serial: Annotated[str, typer.Argument(metavar="SERIAL", help="Hex, as openssl prints it.")],
    pem: Annotated[bool, typer.Option("--pem", help="Print the certificate in PEM.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one certificate."""
    with runtime() as rt:
        c = service.get_certificate(rt, serial)
        now = rt.now()
    if pem:
        write_output(None, c.pem.encode("ascii"))
    elif as_json:
        emit_json(cert_json(c, now))
    else:
        table(f"certificate {c.serial}", ["field", "value"],
              [(k, when(v) if hasattr(v, "strftime") else v)
               for k, v in cert_json(c, now).items()])


@app.command("revoke")
def revoke(
    serial: Annotated[str | None, typer.Argument(metavar="SERIAL", help="Hex serial.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="Revoke all of this device's "
                                               "certificates.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="RFC 5280 reason, e.g. "
                                        "keyCompromise, superseded, cessationOfOperation.")
                      ] = "unspecified",
    as_json: JsonOpt = False,
) -> None:
    """Revoke a certificate by serial, or every certificate of a device."""
    if (serial is None) == (device is None):
        raise typer.BadParameter("give either SERIAL or --device ID")
    why = RevocationReason.parse(reason)
    with runtime() as rt:
        if serial is not None:
            serials = [service.revoke(rt, serial, why).serial]
        else:
            assert device is not None
            serials = service.revoke_device(rt, device, why)
    if as_json:
        emit_json({"revoked": serials, "reason": why.name})
    elif serials:
        for s in serials:
            console.print(f"Revoked {s} ({why.name})", markup=False)
    else:
        console.print(f"Device {device} has no certificate left to revoke", markup=False)


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
    data = read_input(csr, MAX_CSR_BYTES, "CSR")
    grace_period = parse_duration(grace) if grace else None
    with runtime() as rt:
        record = service.renew(rt, serial, data, days=days, grace=grace_period,
                               allow_shared_key=allow_shared_key)
        _print_issued(record, output, as_json, rt.now())
