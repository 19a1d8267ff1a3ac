"""OSCORE security contexts between the CoAP gateway and each device: provisioning, and
the gateway's view of them with replay windows persisted in the store.

A context comes from pair keys, as the COSE payload keys do: the device has a static
X25519 or P-256 key pair and gives its public key; the gateway has one agreement key per
curve (``IOTSEC_HOME/gateway/oscore-<curve>.key``, 0600, made on first use). Both sides
compute the ECDH secret and derive the OSCORE master secret with HKDF, bound to both
identities and both public keys (:func:`iotsec.coap.oscore.pair_context`); the salt is
fresh for every context, so provisioning again gives new keys. The master secret itself is
never stored.

The device's replay window is written to the store with each accepted request, *before*
the request is acted on: after a restart the gateway refuses every sequence number it
had accepted. The gateway protects a plain response with the request's nonce (RFC 8613
5.4.3); an Observe registration's answer and its notifications carry the gateway's own
sender sequence numbers, which must never repeat under the same keys: they are reserved
in ranges of :data:`SEQ_RANGE` in the store (RFC 8613 Appendix B.1.1), the end of the
range written *before* any number in it is used, and a context read after a restart
starts at the end of the last range reserved, above every number used before.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from sqlalchemy import delete, insert, select, update

from iotsec.app.events import Event
from iotsec.app.identity.devices import get_device
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import GATEWAY_USER
from iotsec.coap.edhoc import KID_BYTES, CcsCredential, KidReference, ccs, credential_kid
from iotsec.coap.message import Code
from iotsec.coap.oscore import ALGORITHM, MAX_ID, MAX_SEQ, SecurityContext, pair_context
from iotsec.errors import (
    ConflictError,
    InvalidInputError,
    IotsecError,
    NotFoundError,
    OscoreError,
)
from iotsec.filesystem import write_private_file
from iotsec.identity.registry import DeviceState
from iotsec.protect.pairing import (
    AgreementPrivateKey,
    AgreementPublicKey,
    as_agreement_public,
    load_public_key,
    new_salt,
)
from iotsec.protect.replay import DEFAULT_WINDOW, ReplayWindow
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["GATEWAY_ID", "GATEWAY_SENDER_ID", "MAX_CERT_FILE", "SEQ_RANGE", "GatewayContext",
           "OscoreContexts", "ProvisionedContext", "certificate_kid", "edhoc_by_kid",
           "edhoc_credential", "edhoc_device", "edhoc_key", "provision_context",
           "remove_context"]

#: The gateway's identity in the key derivation (the same name as its MQTT identity).
GATEWAY_ID = GATEWAY_USER
#: The gateway's Sender ID in every context (device Sender IDs are 4 bytes, never equal).
GATEWAY_SENDER_ID = b"\x00"
_DEVICE_ID_BYTES = 4
_WINDOW_BYTES = DEFAULT_WINDOW // 8
#: The gateway's own sender sequence numbers reserved in the store at a time: one write
#: per this many notifications, and at most this many skipped by a restart.
SEQ_RANGE = 1024
_c = m.coap_oscore_contexts.c


@dataclass(frozen=True, slots=True)
class ProvisionedContext:
    """What the device needs to derive the same context (nothing here is secret)."""

    device_id: str
    gateway_id: str
    gateway_public_pem: str
    key_type: str
    salt: bytes
    device_sender_id: bytes
    gateway_sender_id: bytes
    algorithm: int = ALGORITHM


def _key_type(public: AgreementPublicKey) -> str:
    return "x25519" if isinstance(public, x25519.X25519PublicKey) else "p256"


def _key_path(rt: Runtime, key_type: str) -> Path:
    directory = rt.settings.resolved_home / "gateway"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory / f"oscore-{key_type}.key"


def gateway_key(rt: Runtime, key_type: str, *, create: bool) -> AgreementPrivateKey:
    """The gateway's agreement key for ``key_type`` (made when ``create`` and missing)."""
    path = _key_path(rt, key_type)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except FileNotFoundError:
        if not create:
            raise NotFoundError(f"the gateway's OSCORE {key_type} key {path} is missing",
                                hint="start 'iotsec gateway coap --oscore-port PORT' once "
                                "(it makes the key), or provision a device's context") from None
        new: AgreementPrivateKey = (x25519.X25519PrivateKey.generate() if key_type == "x25519"
                                    else ec.generate_private_key(ec.SECP256R1()))
        write_private_file(path, new.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return new
    if not isinstance(key, x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise IotsecError(f"{path} is not an X25519 or P-256 key")
    return key


def _exists(device_id: str) -> ConflictError:
    return ConflictError(f"device {device_id!r} already has an OSCORE context",
                         hint="give --replace to make a new one (the old keys stop working)")


def provision_context(rt: Runtime, device_id: str, device_public: bytes, *,
                      replace: bool = False) -> ProvisionedContext:
    """Make (or with ``replace``, make anew) the OSCORE context of ``device_id`` from its
    agreement public key (PEM or DER, X25519 or P-256)."""
    device = get_device(rt, device_id)
    if device.state in (DeviceState.RETIRED, DeviceState.DISABLED):
        raise InvalidInputError(f"device {device_id!r} is {device.state.value}",
                                hint="enable the device first")
    public = as_agreement_public(load_public_key(device_public))
    if not replace:
        with reading(rt.engine) as conn:
            if conn.execute(select(_c.device_id).where(_c.device_id == device_id)).first():
                raise _exists(device_id)
    key_type = _key_type(public)
    own = gateway_key(rt, key_type, create=True)
    salt = new_salt()
    sender = secrets.token_bytes(_DEVICE_ID_BYTES)
    # Derive once now: a key on the wrong curve or a small-order point is refused here,
    # not on the device's first request.
    pair_context(own, public, own_is_device=False, device_id=device_id, gateway_id=GATEWAY_ID,
                 salt=salt, sender_id=GATEWAY_SENDER_ID, recipient_id=sender)
    der = public_bytes_der(public)
    now = rt.now()
    with transaction(rt.engine) as conn:
        exists = conn.execute(select(_c.device_id).where(_c.device_id == device_id)).first()
        if exists is not None:
            if not replace:
                raise _exists(device_id)
            conn.execute(delete(m.coap_oscore_contexts).where(_c.device_id == device_id))
        conn.execute(insert(m.coap_oscore_contexts).values(
            device_id=device_id, recipient_id=sender, sender_id=GATEWAY_SENDER_ID, salt=salt,
            device_public_der=der, key_type=key_type, replay_top=None,
            replay_bitmap=bytes(_WINDOW_BYTES), created_at=ts(now)))
        rt.events.record_in(conn, Event(
            now, "coap.oscore.context", "success", actor="cli", subject=device_id,
            detail={"kid": sender.hex(), "replaced": exists is not None}))
    gateway_public = own.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ProvisionedContext(device_id, GATEWAY_ID, gateway_public.decode("ascii"), key_type,
                              salt, sender, GATEWAY_SENDER_ID)


def edhoc_key(rt: Runtime, *, create: bool = True) -> tuple[bytes, ec.EllipticCurvePublicKey]:
    """The gateway's EDHOC static key (its P-256 agreement key): the private scalar as
    lakers takes it, and the public key."""
    key = gateway_key(rt, "p256", create=create)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_numbers().private_value.to_bytes(32, "big"), key.public_key()


def edhoc_credential(rt: Runtime, *, create: bool = True) -> bytes:
    """The gateway's EDHOC credential (a CCS by value, subject :data:`GATEWAY_ID`), which a
    device is configured with to authenticate the gateway."""
    return ccs(edhoc_key(rt, create=create)[1], GATEWAY_ID, GATEWAY_SENDER_ID)


def edhoc_device(rt: Runtime, credential: CcsCredential) -> tuple[str, str]:
    """The device and certificate serial an EDHOC credential stands for: its subject must
    be a device with a certificate valid now whose public key is the credential's."""
    device_id = credential.subject
    wanted = credential.public.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    now = ts(rt.now())
    cert = m.certificates.c
    with reading(rt.engine) as conn:
        rows = conn.execute(select(cert.serial, cert.der).where(
            cert.device_id == device_id, cert.revoked_at.is_(None), cert.not_after > now,
            cert.not_before <= now)).all()
    for row in rows:
        try:
            spki = x509.load_der_x509_certificate(bytes(row.der)).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except ValueError:
            continue
        if spki == wanted:
            return device_id, str(row.serial)
    raise OscoreError(f"EDHOC: no valid certificate of {device_id!r} holds the presented key",
                      Code.UNAUTHORIZED)


#: The largest certificate file :func:`certificate_kid` reads.
MAX_CERT_FILE = 64 * 1024


def certificate_kid(data: bytes) -> tuple[str, bytes]:
    """The subject's common name and the EDHOC kid of a device certificate's key (PEM or
    DER): what a device puts in its CCS to be named by kid."""
    try:
        cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") \
            else x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInputError(f"not an X.509 certificate: {exc}") from None
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or \
            not isinstance(public.curve, ec.SECP256R1):
        raise InvalidInputError("EDHOC takes a certificate with a P-256 key")
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else ""
    return subject, credential_kid(public)


def edhoc_by_kid(rt: Runtime, reference: KidReference) -> tuple[CcsCredential, str, str]:
    """The CCS a kid refers to (:func:`iotsec.coap.edhoc.credential_kid`), built as the
    device builds it from a currently valid device certificate whose key has that kid,
    with the device and the certificate's serial. Found through the certificates' SPKI
    digest index; a kid of no such certificate, or of keys of two devices, is refused."""
    if len(reference.kid) != KID_BYTES:
        raise OscoreError("EDHOC: not a credential kid", Code.UNAUTHORIZED)
    prefix = reference.kid.hex()
    now = ts(rt.now())
    cert = m.certificates.c
    with reading(rt.engine) as conn:
        # Hex digits sort below "g" in every collation: a range scan of the index.
        rows = conn.execute(select(cert.serial, cert.device_id, cert.der).where(
            cert.spki_sha256 >= prefix, cert.spki_sha256 < prefix + "g",
            cert.device_id.is_not(None), cert.revoked_at.is_(None), cert.not_after > now,
            cert.not_before <= now).limit(16)).all()
    found: list[tuple[CcsCredential, str, str]] = []
    for row in rows:
        try:
            public = x509.load_der_x509_certificate(bytes(row.der)).public_key()
        except ValueError:
            continue
        if not isinstance(public, ec.EllipticCurvePublicKey) or \
                not isinstance(public.curve, ec.SECP256R1) or \
                credential_kid(public) != reference.kid:
            continue
        device_id = str(row.device_id)
        found.append((CcsCredential(ccs(public, device_id, reference.kid), device_id, public),
                      device_id, str(row.serial)))
    if not found:
        raise OscoreError(f"EDHOC: no valid device certificate has the key of kid {prefix}",
                          Code.UNAUTHORIZED)
    if len({device for _, device, _ in found}) > 1:
        raise OscoreError(f"EDHOC: kid {prefix} names keys of several devices; send the "
                          "credential by value", Code.UNAUTHORIZED)
    return found[0]


def public_bytes_der(public: AgreementPublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def remove_context(rt: Runtime, device_id: str) -> None:
    """Delete the OSCORE context of ``device_id`` (its keys stop working at once)."""
    with transaction(rt.engine) as conn:
        gone = conn.execute(delete(m.coap_oscore_contexts)
                            .where(_c.device_id == device_id)).rowcount
        if not gone:
            raise NotFoundError(f"device {device_id!r} has no OSCORE context")
        rt.events.record_in(conn, Event(rt.now(), "coap.oscore.remove", "success",
                                        actor="cli", subject=device_id))


@dataclass(eq=False)
class GatewayContext:
    """One device's context as the gateway holds it: keys and the replay window. A context
    established by EDHOC names the certificate whose key authenticated it (``serial``) and
    lives in memory only (``persisted`` False): after a restart the device runs EDHOC
    again, so its old kid is unknown and nothing sent under it is accepted."""

    device_id: str
    keys: SecurityContext
    window: ReplayWindow
    lock: threading.Lock
    serial: str | None = None
    persisted: bool = True
    #: The gateway's next sender sequence number, and the end of the range reserved
    #: (a number is used only below it; an EDHOC context's keys are new, so its whole
    #: range is free).
    next_seq: int = 0
    seq_limit: int = MAX_SEQ + 1
    #: When (monotonic) the context was last seen in the store (notifications read it
    #: again after ``IOTSEC_HOT_CACHE_SECONDS``: a removed context stops notifying).
    checked_at: float = field(default_factory=time.monotonic)


class OscoreContexts:
    """The gateway's contexts, found by kid (the device's Sender ID), read from the store
    on first use and kept with their replay windows."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._by_kid: dict[bytes, GatewayContext] = {}
        self._lock = threading.Lock()

    def find(self, kid: bytes) -> GatewayContext | None:
        """The context whose device sends with ``kid``, or None."""
        if len(kid) > MAX_ID:
            return None
        with self._lock:
            found = self._by_kid.get(kid)
        if found is not None:
            return found
        with reading(self.rt.engine) as conn:
            row = conn.execute(select(m.coap_oscore_contexts)
                               .where(_c.recipient_id == kid)).first()
        if row is None:
            return None
        public = as_agreement_public(load_public_key(bytes(row.device_public_der)))
        own = gateway_key(self.rt, row.key_type, create=False)
        keys = pair_context(own, public, own_is_device=False, device_id=row.device_id,
                            gateway_id=GATEWAY_ID, salt=bytes(row.salt),
                            sender_id=bytes(row.sender_id), recipient_id=kid)
        window = ReplayWindow(DEFAULT_WINDOW, top=row.replay_top,
                              bitmap=int.from_bytes(bytes(row.replay_bitmap), "big"))
        reserved = int(row.sender_seq_reserved)
        context = GatewayContext(row.device_id, keys, window, threading.Lock(),
                                 next_seq=reserved, seq_limit=reserved)
        with self._lock:
            return self._by_kid.setdefault(kid, context)

    def forget(self, kid: bytes) -> None:
        with self._lock:
            self._by_kid.pop(kid, None)

    def accept(self, context: GatewayContext, seq: int) -> None:
        """Mark ``seq`` accepted and persist the window before the request is acted on;
        a replay raises (``PayloadReplayError`` / ``PayloadTooOldError``). A context
        deleted or replaced meanwhile is refused."""
        if not context.persisted:
            context.window.accept(seq)
            return
        with context.lock:
            before = context.window.state()
            context.window.accept(seq)
            state = context.window.state()
            try:
                with transaction(self.rt.engine) as conn:
                    done = conn.execute(
                        update(m.coap_oscore_contexts)
                        .where(_c.recipient_id == context.keys.recipient_id,
                               _c.device_id == context.device_id)
                        .values(replay_top=state["top"],
                                replay_bitmap=int(state["bitmap"]).to_bytes(_WINDOW_BYTES,
                                                                            "big"))).rowcount
            except BaseException:
                context.window = ReplayWindow.from_state(before)
                raise
            if not done:
                self.forget(context.keys.recipient_id)
                raise NotFoundError(f"the OSCORE context of {context.device_id!r} was removed")
            context.checked_at = time.monotonic()

    def still_there(self, context: GatewayContext) -> bool:
        """Whether a persisted context is still in the store (read again once
        ``IOTSEC_HOT_CACHE_SECONDS`` have passed since it was last seen; every request
        writes it, so this reads the store only for a device that only receives)."""
        if not context.persisted:
            return True
        now = time.monotonic()
        if now - context.checked_at < self.rt.settings.hot_cache_seconds:
            return True
        with reading(self.rt.engine) as conn:
            row = conn.execute(select(_c.device_id).where(
                _c.recipient_id == context.keys.recipient_id,
                _c.device_id == context.device_id)).first()
        if row is None:
            self.forget(context.keys.recipient_id)
            return False
        context.checked_at = now
        return True

    def sender_seq(self, context: GatewayContext) -> int:
        """A sender sequence number of the gateway for ``context``, never used before under
        its keys: from the range reserved, or from a new range written to the store first.
        A context deleted or replaced meanwhile raises :class:`NotFoundError`, one whose
        numbers are spent :class:`OscoreError` (the device needs a new context)."""
        with context.lock:
            if context.next_seq >= context.seq_limit:
                if not context.persisted or context.seq_limit > MAX_SEQ:
                    raise OscoreError(f"the OSCORE context of {context.device_id!r} has "
                                      "used every sender sequence number; provision it "
                                      "again", Code.SERVICE_UNAVAILABLE)
                with transaction(self.rt.engine) as conn:
                    row = conn.execute(
                        update(m.coap_oscore_contexts)
                        .where(_c.recipient_id == context.keys.recipient_id,
                               _c.device_id == context.device_id)
                        .values(sender_seq_reserved=_c.sender_seq_reserved + SEQ_RANGE)
                        .returning(_c.sender_seq_reserved)).first()
                if row is None:
                    self.forget(context.keys.recipient_id)
                    raise NotFoundError(
                        f"the OSCORE context of {context.device_id!r} was removed")
                limit = min(int(row[0]), MAX_SEQ + 1)
                context.next_seq = max(context.next_seq, limit - SEQ_RANGE)
                context.seq_limit = limit
            seq = context.next_seq
            context.next_seq += 1
            return seq
