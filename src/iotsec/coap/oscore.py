"""OSCORE (RFC 8613): end-to-end protection of CoAP requests and responses (pure).

One algorithm is spoken, the mandatory one: AES-CCM-16-64-128 (COSE 10; 16-byte key,
13-byte nonce, 8-byte tag) with HKDF-SHA-256. A :class:`SecurityContext` is derived from a
master secret and salt (RFC 8613 3.2); it holds no mutable state: the sender sequence
number and the replay window are kept (and persisted) by the caller, because a number must
never be used twice, even across restarts.

The master secret of an iotsec context comes from the pair keys (ECDH + HKDF, as the COSE
payload keys do, :mod:`iotsec.protect.pairing`): :func:`master_secret` binds both
identities and both public keys into the derivation.

Options are split as RFC 8613 4.1 says: the Class U options (Uri-Host, Uri-Port,
Proxy-Uri, Proxy-Scheme, Observe, OSCORE, and RFC 9668's EDHOC) stay outside, every other
option is encrypted with the code and the payload. :func:`parse_option` is strict and
bounded: the OSCORE option is at most :data:`MAX_OPTION` bytes, reserved flag bits and
Partial IV lengths 6 and 7 are refused (RFC 8613 6.1).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from iotsec.coap.message import Code, Message, MessageType, Option, parse_message
from iotsec.errors import CoapMessageError, OscoreError
from iotsec.protect import cbor
from iotsec.protect.pairing import (
    AgreementPrivateKey,
    AgreementPublicKey,
    agree,
    check_identity,
    public_bytes,
)

__all__ = [
    "ALGORITHM", "CLASS_U", "MAX_ID", "MAX_OPTION", "MAX_SEQ", "OscoreOption", "RequestId",
    "SecurityContext", "Unprotected", "encode_option", "master_secret", "pair_context",
    "parse_option", "partial_iv", "protect_request", "protect_response", "request_option",
    "unprotect_request", "unprotect_response"
]

#: AES-CCM-16-64-128 (RFC 9053 4.2), the algorithm RFC 8613 makes mandatory.
ALGORITHM: Final = 10
_KEY_LENGTH: Final = 16
_NONCE_LENGTH: Final = 13
_TAG_LENGTH: Final = 8
#: A Sender ID is at most nonce length - 6 bytes (RFC 8613 3.3).
MAX_ID: Final = _NONCE_LENGTH - 6
#: Sequence numbers are at most 40 bits (RFC 8613 7.2.1).
MAX_SEQ: Final = (1 << 40) - 1
#: The largest OSCORE option value read: flags, a 5-byte Partial IV, a kid context of up to
#: 255 bytes with its length, and a kid no longer than the nonce allows.
MAX_OPTION: Final = 1 + 5 + 1 + 255 + MAX_ID
#: Options that stay in the outer (unprotected) message (RFC 8613 4.1.2, 4.1.3).
CLASS_U: Final = frozenset({Option.URI_HOST, Option.OBSERVE, Option.URI_PORT, Option.OSCORE,
                            Option.EDHOC, Option.PROXY_URI, Option.PROXY_SCHEME})
_MASTER_INFO: Final = b"iotsec oscore master secret v1"
_FETCH: Final = 0x05


@dataclass(frozen=True, slots=True)
class OscoreOption:
    """The OSCORE option's fields (RFC 8613 6.1): Partial IV, kid, kid context."""

    piv: bytes = b""
    kid: bytes | None = None
    kid_context: bytes | None = None


def parse_option(value: bytes) -> OscoreOption:
    """The OSCORE option value, or :class:`OscoreError` (4.02) for anything RFC 8613 6.1
    does not allow or over :data:`MAX_OPTION` bytes."""
    if len(value) > MAX_OPTION:
        raise OscoreError(f"an OSCORE option of {len(value)} bytes (at most {MAX_OPTION})",
                          Code.BAD_OPTION)
    if not value:
        return OscoreOption()
    flags = value[0]
    if flags & 0xE0:
        raise OscoreError("OSCORE option flag bits 5-7 are reserved", Code.BAD_OPTION)
    n = flags & 0x07
    if n > 5:
        raise OscoreError(f"an OSCORE Partial IV length of {n} is reserved", Code.BAD_OPTION)
    pos = 1 + n
    if pos > len(value):
        raise OscoreError("the OSCORE Partial IV runs past the option", Code.BAD_OPTION)
    piv = bytes(value[1:pos])
    kid_context = None
    if flags & 0x10:
        if pos >= len(value):
            raise OscoreError("the OSCORE kid context length is missing", Code.BAD_OPTION)
        size = value[pos]
        pos += 1
        if pos + size > len(value):
            raise OscoreError("the OSCORE kid context runs past the option", Code.BAD_OPTION)
        kid_context = bytes(value[pos:pos + size])
        pos += size
    kid = None
    if flags & 0x08:
        kid = bytes(value[pos:])
        if len(kid) > MAX_ID:
            raise OscoreError(f"an OSCORE kid of {len(kid)} bytes (at most {MAX_ID})",
                              Code.UNAUTHORIZED)
    elif pos != len(value):
        raise OscoreError("bytes after the OSCORE option's fields", Code.BAD_OPTION)
    if flags == 0 and len(value) == 1:
        raise OscoreError("an OSCORE option of one zero byte (it must be empty)",
                          Code.BAD_OPTION)
    return OscoreOption(piv, kid, kid_context)


def encode_option(opt: OscoreOption) -> bytes:
    """The OSCORE option value for ``opt`` (empty when nothing is set)."""
    if len(opt.piv) > 5:
        raise OscoreError("a Partial IV has at most 5 bytes", Code.BAD_OPTION)
    flags = len(opt.piv)
    out = bytearray()
    if opt.kid_context is not None:
        if len(opt.kid_context) > 255:
            raise OscoreError("a kid context has at most 255 bytes", Code.BAD_OPTION)
        flags |= 0x10
        out += bytes((len(opt.kid_context),)) + opt.kid_context
    if opt.kid is not None:
        flags |= 0x08
        out += opt.kid
    if flags == 0:
        return b""
    return bytes((flags,)) + opt.piv + bytes(out)


def partial_iv(seq: int) -> bytes:
    """The Partial IV of sequence number ``seq``: big-endian, no leading zeros, 0 is one
    zero byte (RFC 8613 6.1)."""
    if not 0 <= seq <= MAX_SEQ:
        raise OscoreError(f"sequence number {seq} is outside 0..2^40-1", Code.BAD_REQUEST)
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


def _check_id(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) > MAX_ID:
        raise OscoreError(f"an OSCORE {what} has at most {MAX_ID} bytes", Code.BAD_REQUEST)
    return value


def master_secret(shared: bytes, salt: bytes, device: tuple[bytes, bytes],
                  gateway: tuple[bytes, bytes]) -> bytes:
    """The 16-byte OSCORE master secret from an ECDH shared secret: HKDF-SHA-256 with the
    pairing salt, and as info the COSE_KDF_Context binding (identity, public key) of the
    device and of the gateway, as :func:`iotsec.protect.pairing.establish` does."""
    prk = hmac.digest(salt, shared, "sha256")
    info = cbor.dumps([ALGORITHM, [device[0], None, device[1]], [gateway[0], None, gateway[1]],
                       [128, cbor.dumps({1: ALGORITHM}), _MASTER_INFO]])
    return HKDFExpand(hashes.SHA256(), _KEY_LENGTH, info).derive(prk)


def pair_context(own_private: AgreementPrivateKey, peer_public: AgreementPublicKey, *,
                 own_is_device: bool, device_id: str, gateway_id: str, salt: bytes,
                 sender_id: bytes, recipient_id: bytes) -> SecurityContext:
    """The security context one side derives from its private key and the other's public
    key: the device (``own_is_device``) or the gateway. Both derive the same master secret;
    the master salt is the pairing salt."""
    own = public_bytes(own_private.public_key())
    peer = public_bytes(peer_public)
    device_key, gateway_key = (own, peer) if own_is_device else (peer, own)
    secret = master_secret(agree(own_private, peer_public), salt,
                           (check_identity(device_id, "device id"), device_key),
                           (check_identity(gateway_id, "gateway id"), gateway_key))
    return SecurityContext(secret, salt, sender_id=sender_id, recipient_id=recipient_id)


class SecurityContext:
    """The keys of one OSCORE security context (RFC 8613 3.2), as one endpoint sees it."""

    __slots__ = ("_recipient", "_sender", "common_iv", "id_context", "recipient_id",
                 "sender_id")

    def __init__(self, master_secret: bytes, master_salt: bytes, *, sender_id: bytes,
                 recipient_id: bytes, id_context: bytes | None = None) -> None:
        self.sender_id = _check_id(sender_id, "Sender ID")
        self.recipient_id = _check_id(recipient_id, "Recipient ID")
        if sender_id == recipient_id:
            raise OscoreError("the Sender ID and the Recipient ID of a context must differ",
                              Code.BAD_REQUEST)
        if len(master_secret) < 16:
            raise OscoreError("an OSCORE master secret has at least 16 bytes", Code.BAD_REQUEST)
        self.id_context = id_context

        def derive(id_: bytes, kind: str, length: int) -> bytes:
            info = cbor.dumps([id_, id_context, ALGORITHM, kind, length])
            return HKDF(hashes.SHA256(), length, master_salt, info).derive(master_secret)

        self._sender = AESCCM(derive(sender_id, "Key", _KEY_LENGTH), _TAG_LENGTH)
        self._recipient = AESCCM(derive(recipient_id, "Key", _KEY_LENGTH), _TAG_LENGTH)
        self.common_iv = derive(b"", "IV", _NONCE_LENGTH)

    def __repr__(self) -> str:
        return (f"SecurityContext(sender {self.sender_id.hex() or '-'}, "
                f"recipient {self.recipient_id.hex() or '-'})")

    def nonce(self, id_piv: bytes, piv: bytes) -> bytes:
        """RFC 8613 5.2: the PIV owner's id and the Partial IV, padded, XOR the Common IV."""
        pre = bytes((len(id_piv),)) + id_piv.rjust(MAX_ID, b"\0") + piv.rjust(5, b"\0")
        return bytes(a ^ b for a, b in zip(pre, self.common_iv, strict=True))

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._sender.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._recipient.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise OscoreError("the OSCORE message does not decrypt (wrong context or altered)",
                              Code.BAD_REQUEST) from None


@dataclass(frozen=True, slots=True)
class RequestId:
    """What binds a response to its request: the request's kid and Partial IV."""

    kid: bytes
    piv: bytes


@dataclass(frozen=True, slots=True)
class Unprotected:
    """A verified request: the inner message, and the kid and sequence number it used."""

    message: Message
    request: RequestId
    seq: int


def _aad(request: RequestId) -> bytes:
    external = cbor.dumps([1, [ALGORITHM], request.kid, request.piv, b""])
    return cbor.dumps(["Encrypt0", b"", external])


def _split(message: Message) -> tuple[tuple[tuple[int, bytes], ...], bytes]:
    """The outer options and the plaintext (code, inner options, payload)."""
    outer = tuple((n, v) for n, v in message.options if n in CLASS_U and n != Option.OSCORE)
    inner = tuple((n, v) for n, v in message.options if n not in CLASS_U)
    body = Message(MessageType.CON, message.code, 0, b"", inner, message.payload).encode()[4:]
    return outer, bytes((message.code,)) + body


def _join(outer: Message, plaintext: bytes) -> Message:
    """The inner message: decrypted code, inner options and payload, with the outer
    message's type, id, token and Class U options (an inner one wins). Any other outer
    option was not protected and is discarded (RFC 8613 8.2, 8.4)."""
    if not plaintext:
        raise OscoreError("an OSCORE plaintext without a code", Code.BAD_REQUEST)
    try:
        inner = parse_message(bytes((0x40, plaintext[0], 0, 0)) + plaintext[1:],
                              limit=len(plaintext) + 3)
    except CoapMessageError as exc:
        raise OscoreError(f"the decrypted message is not CoAP: {exc}", Code.BAD_REQUEST) from None
    inner_numbers = {n for n, _ in inner.options}
    if Option.OSCORE in inner_numbers:
        raise OscoreError("an OSCORE option inside the protected message", Code.BAD_REQUEST)
    kept = tuple((n, v) for n, v in outer.options
                 if n in CLASS_U and n not in (Option.OSCORE, Option.EDHOC)
                 and n not in inner_numbers)
    options = tuple(sorted(kept + inner.options, key=lambda o: o[0]))
    return Message(outer.type, inner.code, outer.mid, outer.token, options, inner.payload)


def protect_request(ctx: SecurityContext, request: Message, seq: int
                    ) -> tuple[Message, RequestId]:
    """``request`` protected with sequence number ``seq`` (used once, ever)."""
    piv = partial_iv(seq)
    rid = RequestId(ctx.sender_id, piv)
    outer_options, plaintext = _split(request)
    option = encode_option(OscoreOption(piv, ctx.sender_id, ctx.id_context))
    ciphertext = ctx.seal(ctx.nonce(ctx.sender_id, piv), plaintext, _aad(rid))
    code = _FETCH if any(n == Option.OBSERVE for n, _ in outer_options) else Code.POST
    return Message(request.type, code, request.mid, request.token,
                   (*outer_options, (Option.OSCORE, option)), ciphertext), rid


def request_option(message: Message) -> OscoreOption:
    """The OSCORE option of a protected request, which must name a kid and a Partial IV."""
    values = message.values(Option.OSCORE)
    if len(values) != 1:
        raise OscoreError("a request with no or several OSCORE options", Code.BAD_OPTION)
    opt = parse_option(values[0])
    if opt.kid is None or not opt.piv:
        raise OscoreError("an OSCORE request names its kid and Partial IV", Code.BAD_REQUEST)
    return opt


def unprotect_request(ctx: SecurityContext, message: Message) -> Unprotected:
    """Verify and decrypt a request for ``ctx`` (found by the option's kid). The caller
    checks the sequence number against its replay window first and accepts it after."""
    opt = request_option(message)
    assert opt.kid is not None
    if opt.kid != ctx.recipient_id or opt.kid_context != ctx.id_context:
        raise OscoreError("the request's kid names another security context",
                          Code.UNAUTHORIZED)
    if message.code not in (Code.POST, _FETCH):
        raise OscoreError("an OSCORE request's outer code is POST or FETCH", Code.BAD_REQUEST)
    rid = RequestId(opt.kid, opt.piv)
    plaintext = ctx.open(ctx.nonce(opt.kid, opt.piv), message.payload, _aad(rid))
    inner = _join(message, plaintext)
    if not inner.is_request:
        raise OscoreError("the protected message is not a request", Code.BAD_REQUEST)
    return Unprotected(inner, rid, int.from_bytes(opt.piv, "big"))


def protect_response(ctx: SecurityContext, request: RequestId, response: Message,
                     seq: int | None = None) -> Message:
    """``response`` protected for ``request``: with the request's nonce when ``seq`` is
    None, or with this sender's own Partial IV ``seq`` (notifications must use one)."""
    outer_options, plaintext = _split(response)
    if seq is None:
        nonce, option = ctx.nonce(request.kid, request.piv), b""
    else:
        piv = partial_iv(seq)
        nonce, option = ctx.nonce(ctx.sender_id, piv), encode_option(OscoreOption(piv))
    ciphertext = ctx.seal(nonce, plaintext, _aad(request))
    code = Code.CONTENT if any(n == Option.OBSERVE for n, _ in outer_options) \
        else Code.CHANGED
    return Message(response.type, code, response.mid, response.token,
                   (*outer_options, (Option.OSCORE, option)), ciphertext)


def unprotect_response(ctx: SecurityContext, request: RequestId, message: Message) -> Message:
    """Verify and decrypt the response to ``request``."""
    values = message.values(Option.OSCORE)
    if len(values) != 1:
        raise OscoreError("the response is not OSCORE-protected", Code.BAD_OPTION)
    opt = parse_option(values[0])
    # A response with its own Partial IV uses its sender's; one without reuses the request's.
    nonce = ctx.nonce(ctx.recipient_id, opt.piv) if opt.piv else \
        ctx.nonce(request.kid, request.piv)
    return _join(message, ctx.open(nonce, message.payload, _aad(request)))
