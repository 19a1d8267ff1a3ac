"""``iotsec cert import``: register certificates this CA issued that the store does not know.

After a restore, certificates issued after the backup are valid in the field but unknown to
the restored store, so they could not be revoked. Importing their files (PEM, several per
file, or DER) verifies each against the home's issuing CAs and registers it with its device,
so that ``iotsec cert revoke`` and the CRL cover it again. A device that the store does not
know either is registered again (active, with the default role) and listed, so the operator
can restore its groups and roles. All or nothing: one certificate that does not verify
refuses the whole import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select, update

from iotsec.app.events import Event, append_events
from iotsec.app.identity.bindings import policy_changed
from iotsec.app.identity.devices import NewDevice, insert_devices
from iotsec.app.pki.cert_records import certificate_row
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, InvalidInputError, PkiError
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.pki.issue import IssuedCertificate, device_uri
from iotsec.pki.serial import format_serial
from iotsec.pki.x509 import spki_der
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts

__all__ = ["MAX_CERT_FILE", "MAX_IMPORT", "ImportResult", "import_certificates",
           "parse_certificates"]

#: Certificates one import takes, and the largest file it reads.
MAX_IMPORT: Final = 10_000
MAX_CERT_FILE: Final = 16 * 1024 * 1024
_URN: Final = device_uri("")


@dataclass(frozen=True)
class ImportResult:
    imported: list[tuple[str, str | None]]
    already_known: list[str]
    devices_created: list[str]


def parse_certificates(name: str, data: bytes) -> list[x509.Certificate]:
    """The certificates in one file: PEM (one or more) or DER."""
    try:
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise InvalidInputError(f"{name} holds no readable certificate",
                                hint="give PEM or DER certificate files") from None


def _device_of(cert: x509.Certificate) -> str | None:
    """The device a certificate names in its ``urn:iotsec:device:`` URI (and its CN)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(_URN)]
    if not uris:
        return None
    device_id = parse_device_id(uris[0][len(_URN):])
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(uris) != 1 or [c.value for c in cns] != [device_id]:
        raise PkiError(f"certificate {format_serial(cert.serial_number)} names its device "
                       "inconsistently", hint="it was not issued by iotsec")
    return device_id


def _issuer(cert: x509.Certificate, issuers: Sequence[tuple[int, x509.Certificate]],
            name: str) -> int:
    for authority_id, ca in issuers:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return authority_id
    raise PkiError(f"certificate {format_serial(cert.serial_number)} in {name} was not "
                   "issued by this home's issuing CA", hint="import only certificates this "
                   "CA issued; nothing was imported")


def import_certificates(rt: Runtime, files: Sequence[tuple[str, bytes]]) -> ImportResult:
    """Register the certificates in ``files`` (name, content): all of them or none."""
    certs = [(name, cert) for name, data in files for cert in parse_certificates(name, data)]
    if len(certs) > MAX_IMPORT:
        raise InvalidInputError(f"an import takes at most {MAX_IMPORT} certificates",
                                hint="split the files into smaller imports")
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    imported: list[tuple[str, str | None]] = []
    known: list[str] = []
    created: list[str] = []
    c = m.certificates.c
    with transaction(rt.engine) as conn:
        issuers = [(row.id, x509.load_der_x509_certificate(row.cert_der)) for row in
                   conn.execute(select(m.authorities.c.id, m.authorities.c.cert_der)
                                .where(m.authorities.c.role == "issuing"))]
        for name, cert in certs:
            authority_id = _issuer(cert, issuers, name)
            device_id = _device_of(cert)
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            issued = IssuedCertificate(
                serial=cert.serial_number, der=cert.public_bytes(Encoding.DER),
                not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                subject_cn=(str(cns[0].value) if cns else cert.subject.rfc4514_string())[:256],
                spki_sha256=hashlib.sha256(spki_der(cert.public_key())).hexdigest())
            serial = format_serial(issued.serial)
            existing = conn.execute(select(c.sha256).where(c.serial == serial)).first()
            if existing is not None:
                if existing.sha256 != issued.sha256:
                    raise ConflictError(f"the store holds another certificate with serial "
                                        f"{serial}", hint="nothing was imported")
                known.append(serial)
                continue
            if device_id is not None and conn.execute(select(m.devices.c.id).where(
                    m.devices.c.id == device_id)).first() is None:
                insert_devices(conn, [NewDevice.parse(device_id)], now)
                conn.execute(update(m.devices).where(m.devices.c.id == device_id).values(
                    state=DeviceState.ACTIVE.value, updated_at=now))
                created.append(device_id)
            kind = "device" if device_id is not None else "server"
            conn.execute(insert(m.certificates).values(certificate_row(
                issued, authority_id=authority_id, device_id=device_id, kind=kind,
                profile=kind, now=now)))
            imported.append((serial, device_id))
        append_events(conn, [Event(
            at=moment, kind="cert.import", outcome="ok",
            subject=f"{len(imported)} certificates",
            detail={"serials": [s for s, _ in imported][:1000],
                    "devices_created": created[:1000]}).row()])
    if created:
        policy_changed(rt)
    return ImportResult(imported=imported, already_known=known, devices_created=created)
