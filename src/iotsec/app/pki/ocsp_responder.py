"""Who signs OCSP answers: every CA's delegated responder certificate, or the CA itself.

With ``IOTSEC_OCSP_SIGNER=responder`` (the default) each CA delegates OCSP to a certificate
of its own (:func:`iotsec.pki.ocsp_responder.issue_responder`: OCSPSigning, ocsp-nocheck,
four days). Its key is an encrypted PKCS#8 file in the home's file key store, like the
server's TLS key (on a PKCS#11 home too: only the CA keys stay in the token, and the CA key
is used once per rotation rather than once per answer); its certificate is
``<home>/ocsp/responder-<ca id>.pem`` and the key's label is beside it. A serving process
replaces it when less than :data:`~iotsec.pki.ocsp_responder.RENEW_BEFORE` of it is left:
under a lock file, so that of several workers one rotates and the others read what it
wrote. With ``IOTSEC_OCSP_SIGNER=ca`` the CA key signs every answer (each use recorded as
a ``key.use`` event, as every CA signature is).

Responder certificates are not in the certificate store: they are not revoked (ocsp-nocheck
tells clients not to ask) but expire within days.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from iotsec.app.runtime import Runtime, Slot
from iotsec.custody.file_keys import FileKeyStore
from iotsec.custody.home import read_passphrase
from iotsec.errors import IotsecError, OcspRotationBusyError
from iotsec.filesystem import atomic_write, exclusive_lock
from iotsec.pki import x509 as enc
from iotsec.pki.ca import Authority
from iotsec.pki.keys import Signer
from iotsec.pki.ocsp_responder import RENEW_BEFORE, issue_responder

__all__ = ["OcspSigner", "ocsp_signer"]


@dataclass(frozen=True, slots=True)
class OcspSigner:
    """What signs the answers of one CA: a signer, the certificates the answer carries
    (the delegated responder's), and until when it may sign."""

    signer: Signer
    certs: tuple[bytes, ...]
    not_after: datetime
    #: The responder certificate's serial, 0 when the CA signs itself.
    serial: int


_HELD: Slot[dict[int, OcspSigner]] = Slot("ocsp.signers")
_LOCK = threading.Lock()


def _key_store(rt: Runtime) -> FileKeyStore:
    # A store of its own, without the key-use hook: the responder key signs every fresh
    # answer, and is no CA key (like the TLS key, whose handshakes are not recorded).
    return FileKeyStore(rt.settings.keys_dir, read_passphrase(rt.settings))


def _read(rt: Runtime, ca_id: int, ca: Authority) -> OcspSigner | None:
    """The responder that ``<home>/ocsp`` holds for CA ``ca_id``, if it is one of ``ca``'s
    and its key loads."""
    directory = rt.settings.ocsp_dir
    try:
        cert = x509.load_pem_x509_certificate(
            (directory / f"responder-{ca_id}.pem").read_bytes())
        label = (directory / f"responder-{ca_id}.label").read_text().strip()
        signer = _key_store(rt).load(label)
    except (OSError, ValueError, IotsecError):
        return None
    if cert.issuer.public_bytes() != ca.subject or enc.spki_der(cert.public_key()) != \
            enc.spki_der(signer.public_key()):
        return None
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):  # not this CA's responder
        return None
    return OcspSigner(signer, (cert.public_bytes(Encoding.DER),), cert.not_valid_after_utc,
                      cert.serial_number)


def _issue(rt: Runtime, ca_id: int, ca: Authority, now: datetime) -> OcspSigner:
    directory = rt.settings.ocsp_dir
    keys = _key_store(rt)
    label = f"ocsp-{ca_id}-{secrets.token_hex(4)}"
    signer = keys.generate(label, ca.signer.key_type)
    issued = issue_responder(ca, spki=enc.spki_der(signer.public_key()), now=now)
    label_file = directory / f"responder-{ca_id}.label"
    previous = ""
    with contextlib.suppress(OSError):
        previous = label_file.read_text().strip()
    atomic_write(directory / f"responder-{ca_id}.pem", enc.to_pem(issued.der, "CERTIFICATE"))
    atomic_write(label_file, (label + "\n").encode("ascii"))
    # The replaced key signs nothing more (a process still holding it has it in memory,
    # and its certificate expires within days): its file goes, so keys do not pile up.
    if previous.startswith(f"ocsp-{ca_id}-") and previous != label:
        with contextlib.suppress(OSError, IotsecError):
            keys.private_key_path(previous).unlink(missing_ok=True)
    return OcspSigner(signer, (issued.der,), issued.not_after, issued.serial)


def _usable(held: OcspSigner | None, now: datetime, ca: Authority) -> bool:
    """Whether ``held`` may go on signing: more than RENEW_BEFORE left, or (a CA near its
    own end) valid and already lasting as long as the CA, so that a new one would not."""
    if held is None or now >= held.not_after:
        return False
    return now < held.not_after - RENEW_BEFORE or held.not_after >= ca.not_after


def ocsp_signer(rt: Runtime, ca_id: int, ca: Authority) -> OcspSigner:
    """The signer of CA ``ca_id``'s answers now: the CA itself, or its delegated responder,
    issued or replaced first when it has less than ``RENEW_BEFORE`` left. Raises
    :class:`OcspRotationBusyError` when another process is replacing it and this one holds
    none it may still use."""
    if rt.settings.ocsp_signer == "ca":
        return OcspSigner(ca.signer, (), ca.not_after, 0)
    now = rt.now()
    held = rt.get_or_put(_HELD, dict)
    current = held.get(ca_id)
    if _usable(current, now, ca):
        assert current is not None
        return current
    with _LOCK:
        current = held.get(ca_id)
        if _usable(current, now, ca):
            assert current is not None
            return current
        on_disk = _read(rt, ca_id, ca)
        if not _usable(on_disk, now, ca):
            directory = rt.settings.ocsp_dir
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                with exclusive_lock(directory / f"responder-{ca_id}.lock",
                                    OcspRotationBusyError("another process is replacing the "
                                                      "OCSP responder certificate")):
                    on_disk = _read(rt, ca_id, ca)  # another process may have just done it
                    if not _usable(on_disk, now, ca):
                        on_disk = _issue(rt, ca_id, ca, now)
            except OcspRotationBusyError:
                if current is not None and now < current.not_after:
                    return current
                raise
        assert on_disk is not None
        held[ca_id] = on_disk
        return on_disk
