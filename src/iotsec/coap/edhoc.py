"""EDHOC (RFC 9528) as the responder, to establish OSCORE contexts with a device's own
certificate key (method 3: static Diffie-Hellman keys on both sides, cipher suite 2:
AES-CCM-16-64-128, SHA-256, P-256).

The protocol is lakers' (``lakers-python``, the EDHOC implementation aiocoap uses). Lakers
takes credentials as CWT Claims Sets (CCS, RFC 8392) only, not X.509 chains, so a device
presents a CCS holding its certificate's P-256 public key with its device id as the
subject; the gateway accepts it only when that key is the key of a currently valid
certificate of that device in the store (see :mod:`iotsec.app.coap.oscore_endpoint`).
The CCS is sent *by value*, or *by key id* (ID_CRED_I ``{4: kid}``, RFC 9528 3.5.3) when
its kid is :func:`credential_kid` of the key: the first 8 bytes of the SHA-256 of the
certificate's SubjectPublicKeyInfo, by which the gateway finds the certificate, and so
builds the same CCS, in its store.

The CoAP transport is RFC 9528 Appendix A.2 with the EDHOC + OSCORE combined request of
RFC 9668: message_1 is POSTed to ``/.well-known/edhoc`` after the CBOR ``true``; message_3
travels in front of the first OSCORE request, which carries the EDHOC option (21). The
OSCORE context comes from the EDHOC exporter (RFC 9528 Appendix A.1): master secret
(label 0, 16 bytes), master salt (label 1, 8 bytes), the gateway's Recipient ID is C_R and
its Sender ID is C_I.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import lakers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotsec.coap.message import Code
from iotsec.coap.oscore import SecurityContext
from iotsec.errors import CborError, OscoreError
from iotsec.protect import cbor

__all__ = [
    "EDHOC_PATH", "KID_BYTES", "MAX_MESSAGE", "CcsCredential", "KidReference", "Responder",
    "ccs", "connection_ids", "credential_kid", "parse_ccs", "parse_id_cred",
    "split_message_3"
]

EDHOC_PATH: Final = (".well-known", "edhoc")
#: The largest EDHOC message read (a message_3 with a CCS by value is about 150 bytes).
MAX_MESSAGE: Final = 1024
_TRUE: Final = b"\xf5"
_KCCS: Final = 14
_KID: Final = 4
#: The length of a kid that refers to a certificate's key (:func:`credential_kid`).
KID_BYTES: Final = 8


def credential_kid(public: ec.EllipticCurvePublicKey) -> bytes:
    """The kid by which a device refers to the CCS of its certificate key: the first
    :data:`KID_BYTES` bytes of the SHA-256 of the key's SubjectPublicKeyInfo (DER)."""
    spki = public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()[:KID_BYTES]


def ccs(public: ec.EllipticCurvePublicKey, subject: str, kid: bytes) -> bytes:
    """The CCS (RFC 8392) holding ``public`` (P-256) with ``subject`` and ``kid``, in
    deterministic CBOR as lakers and aiocoap encode it: ``{2: subject, 8: {1: COSE_Key}}``."""
    if not isinstance(public.curve, ec.SECP256R1):
        raise OscoreError("an EDHOC credential holds a P-256 key", Code.BAD_REQUEST)
    numbers = public.public_numbers()
    key = {1: 2, 2: kid, -1: 1, -2: numbers.x.to_bytes(32, "big"),
           -3: numbers.y.to_bytes(32, "big")}
    return cbor.dumps({2: subject, 8: {1: key}})


@dataclass(frozen=True, slots=True)
class CcsCredential:
    """A device's CCS as it arrived (``encoded``), with its subject and public key."""

    encoded: bytes
    subject: str
    public: ec.EllipticCurvePublicKey


def _refuse(what: str) -> OscoreError:
    return OscoreError(f"EDHOC: {what}", Code.BAD_REQUEST)


@dataclass(frozen=True, slots=True)
class KidReference:
    """An ID_CRED_I naming the device's CCS by its kid (:func:`credential_kid`)."""

    kid: bytes


def parse_id_cred(id_cred: bytes) -> CcsCredential | KidReference:
    """The credential of an ID_CRED_I: a CCS by value (``{14: CCS}``) or a reference by
    kid (``{4: kid}`` of :data:`KID_BYTES` bytes); anything else is refused."""
    try:
        value = cbor.loads(id_cred)
    except CborError as exc:
        raise _refuse(f"ID_CRED_I is not CBOR ({exc})") from None
    if isinstance(value, dict) and set(value) == {_KID}:
        kid = value[_KID]
        if not isinstance(kid, bytes) or len(kid) != KID_BYTES:
            raise _refuse(f"a credential's kid has {KID_BYTES} bytes (the SHA-256 of the "
                          "certificate key's SubjectPublicKeyInfo, cut)")
        return KidReference(kid)
    return parse_ccs(id_cred)


def parse_ccs(id_cred: bytes) -> CcsCredential:
    """The credential of an ID_CRED_I that carries a CCS by value (``{14: CCS}``)."""
    try:
        value = cbor.loads(id_cred)
    except CborError as exc:
        raise _refuse(f"ID_CRED_I is not CBOR ({exc})") from None
    if not isinstance(value, dict) or set(value) != {_KCCS} or \
            not id_cred.startswith(b"\xa1\x0e"):
        raise _refuse("the device's credential is sent by value (a CCS, {14: ...}) or by "
                      "its kid ({4: kid})")
    encoded = id_cred[2:]
    claims: Any = value[_KCCS]
    try:
        subject = claims[2]
        key = claims[8][1]
        x, y = key[-2], key[-3]
        if key[1] != 2 or key[-1] != 1 or not isinstance(subject, str) or \
                not isinstance(x, bytes) or not isinstance(y, bytes):
            raise TypeError
        public = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"),
                                               int.from_bytes(y, "big"),
                                               ec.SECP256R1()).public_key()
    except (KeyError, TypeError, IndexError, ValueError):
        raise _refuse("the CCS holds no subject and P-256 key") from None
    return CcsCredential(encoded, subject, public)


def connection_ids() -> list[bytes]:
    """The connection identifiers lakers can use: one-byte CBOR integers -24..23."""
    return [cbor.dumps(i) for i in range(-24, 24)]


def split_message_3(payload: bytes) -> tuple[bytes, bytes]:
    """message_3 (the first CBOR item of a combined request's payload) and the OSCORE
    ciphertext after it (RFC 9668 3.2.1)."""
    if len(payload) > MAX_MESSAGE + 1152:
        raise _refuse("a combined request over the size limit")
    try:
        value, used = cbor.loads_first(payload)
    except CborError as exc:
        raise _refuse(f"message_3 is not CBOR ({exc})") from None
    if not isinstance(value, bytes) or used >= len(payload):
        raise _refuse("a combined request holds message_3 and an OSCORE ciphertext")
    return payload[:used], payload[used:]


class Responder:
    """One EDHOC session as the responder, from message_1 to the OSCORE context."""

    __slots__ = ("_lakers", "c_i", "c_r")

    def __init__(self, private_d: bytes, own_credential: bytes, message_1: bytes,
                 free_ids: list[bytes]) -> None:
        if not message_1.startswith(_TRUE) or len(message_1) > MAX_MESSAGE:
            raise _refuse("message_1 follows the CBOR true (RFC 9528 A.2)")
        self._lakers = lakers.EdhocResponder(r=private_d, cred_r=own_credential)
        try:
            c_i, ead_1 = self._lakers.process_message_1(message_1[1:])
        except Exception as exc:  # lakers raises its own untyped errors
            raise _refuse(f"message_1 refused ({exc})") from None
        if any(e.is_critical() for e in ead_1):
            raise _refuse("a critical EAD item in message_1")
        candidates = [c for c in free_ids if c != c_i]
        if not candidates:
            raise OscoreError("no EDHOC connection identifier is free",
                              Code.SERVICE_UNAVAILABLE)
        self.c_i: bytes = bytes(c_i)
        self.c_r = candidates[0]

    def message_2(self) -> bytes:
        try:
            return bytes(self._lakers.prepare_message_2(lakers.CredentialTransfer.ByValue,
                                                        self.c_r, None))
        except Exception as exc:
            raise _refuse(f"message_2 not made ({exc})") from None

    def device_credential(self, message_3: bytes) -> CcsCredential | KidReference:
        """Parse message_3 and return the credential it carries or names (not yet
        verified)."""
        try:
            id_cred_i, ead_3 = self._lakers.parse_message_3(message_3)
        except Exception as exc:
            raise _refuse(f"message_3 refused ({exc})") from None
        if any(e.is_critical() for e in ead_3):
            raise _refuse("a critical EAD item in message_3")
        return parse_id_cred(bytes(id_cred_i))

    def finish(self, credential: CcsCredential) -> SecurityContext:
        """Verify message_3 with the accepted credential; the OSCORE context."""
        try:
            self._lakers.verify_message_3(credential.encoded)
            self._lakers.completed_without_message_4()
            secret = bytes(self._lakers.edhoc_exporter(0, [], 16))
            salt = bytes(self._lakers.edhoc_exporter(1, [], 8))
        except Exception as exc:
            raise OscoreError(f"EDHOC: message_3 does not verify ({exc})",
                              Code.UNAUTHORIZED) from None
        return SecurityContext(secret, salt, sender_id=self.c_i, recipient_id=self.c_r)
