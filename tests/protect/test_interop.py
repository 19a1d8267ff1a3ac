"""Interoperability with pycose, an independent COSE implementation (its own CBOR through
cbor2, its own Enc_structure/Sig_structure, ECDSA through python-ecdsa).

* What iotsec seals, pycose opens; what pycose makes, iotsec opens: COSE_Encrypt0 with
  AES-256-GCM and ChaCha20/Poly1305, COSE_Sign1 with ES256 and EdDSA.
* The pair keys iotsec derives equal HKDF-SHA256 over pycose's own COSE_KDF_Context
  encoding (RFC 9053, section 5.2), computed here independently.

pycose 1.1 has no ChaCha20/Poly1305 algorithm class; it is registered below exactly as pycose
defines its AES-GCM class (the primitive is the only thing supplied; pycose still builds and
parses the messages).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from pycose import headers
from pycose.algorithms import A256GCM, CoseAlgorithm, EdDSA, Es256, _EncAlg
from pycose.keys import CoseKey, SymmetricKey
from pycose.messages import CoseMessage, Enc0Message, Sign1Message
from pycose.messages.context import CoseKDFContext, PartyInfo, SuppPubInfo
from pycose.messages.cosemessage import CM

from iotsec.protect.cose import SEQ_LABEL
from iotsec.protect.pairing import Algorithm, PairContext, SigningKey, public_bytes
from iotsec.protect.payload import Keyring, open, seal
from iotsec.protect.replay import ReplayWindow
from tests.protect.support import APP, DEVICE, Pair, make_pair


@CoseAlgorithm.register_attribute()
class ChaCha20Poly1305Alg(_EncAlg):
    """ChaCha20/Poly1305 (RFC 9053, section 4.3), in pycose's own shape."""

    identifier = 24
    fullname = "ChaCha20/Poly1305"

    @classmethod
    def get_key_length(cls) -> int:
        return 32

    @classmethod
    def encrypt(cls, key: SymmetricKey, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return ChaCha20Poly1305(key.k).encrypt(nonce, data, aad)

    @classmethod
    def decrypt(cls, key: SymmetricKey, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        return ChaCha20Poly1305(key.k).decrypt(nonce, ciphertext, aad)


def pycose_decode(cls: type[CM], data: bytes) -> CM:
    """pycose's ``CoseMessage.decode``, unchanged but for one line: cbor2 6 decodes what is
    inside a tag as immutable values (tuple, frozendict), while pycose 1.1 insists on a list
    and a dict (and refuses the message otherwise)."""
    item = cbor2.loads(data)
    items = [dict(v) if isinstance(v, Mapping) else v for v in item.value]
    decoded = CoseMessage._COSE_MSG_ID[item.tag].from_cose_obj(items, True)
    assert isinstance(decoded, cls)
    return decoded


PYCOSE_ALG = {Algorithm.A256GCM: A256GCM, Algorithm.CHACHA20_POLY1305: ChaCha20Poly1305Alg}


def independent_key(p: Pair, alg: Algorithm) -> tuple[bytes, bytes]:
    """The device-to-application key and kid, computed with pycose's KDF context and plain
    HKDF (RFC 5869) from the ECDH secret -- not with iotsec's derivation code."""
    if isinstance(p.device_key, ec.EllipticCurvePrivateKey):
        assert isinstance(p.app_key, ec.EllipticCurvePrivateKey)
        shared = p.device_key.exchange(ec.ECDH(), p.app_key.public_key())
    else:
        shared = p.device_key.exchange(p.app_key.public_key())  # type: ignore[arg-type]
    prk = hmac.new(p.salt, shared, hashlib.sha256).digest()  # HKDF-Extract

    def context(length: int, other: bytes) -> bytes:
        return CoseKDFContext(
            PYCOSE_ALG[alg],
            SuppPubInfo(length, {headers.Algorithm: PYCOSE_ALG[alg]}, other),
            PartyInfo(DEVICE.encode(), None, public_bytes(p.device_key.public_key())),
            PartyInfo(APP.encode(), None, public_bytes(p.app_key.public_key())),
        ).encode()

    key = HKDFExpand(hashes.SHA256(), 32, context(32, b"iotsec payload key v1")).derive(prk)
    kid = HKDFExpand(hashes.SHA256(), 16, context(16, b"iotsec payload kid v1")).derive(prk)
    return key, kid[:8]


@pytest.mark.parametrize("curve", ["x25519", "p256"])
@pytest.mark.parametrize("alg", [Algorithm.A256GCM, Algorithm.CHACHA20_POLY1305])
def test_encrypt0_both_directions(curve: str, alg: Algorithm) -> None:
    p = make_pair(curve, alg)
    key, kid = independent_key(p, alg)
    assert kid == p.device.send.kid == p.app.receive.kid
    cose_key = SymmetricKey(k=key)

    # iotsec -> pycose
    ours = seal(b"reading=42", p.device.send, seq=9, external_aad=b"devices/dev-0001/up")
    decoded = pycose_decode(Enc0Message, ours)
    decoded.key = cose_key
    decoded.external_aad = b"devices/dev-0001/up"
    assert decoded.decrypt() == b"reading=42"
    assert decoded.phdr[headers.Algorithm] is PYCOSE_ALG[alg]
    assert decoded.phdr[headers.KID] == kid and decoded.phdr[SEQ_LABEL] == 9
    decoded.external_aad = b"elsewhere"
    with pytest.raises(Exception):  # noqa: B017 - pycose raises cryptography's InvalidTag
        decoded.decrypt()

    # pycose -> iotsec
    theirs = Enc0Message(phdr={headers.Algorithm: PYCOSE_ALG[alg], headers.KID: kid,
                               SEQ_LABEL: 10},
                         uhdr={headers.IV: secrets.token_bytes(12)},
                         payload=b"command=reboot", external_aad=b"devices/dev-0001/up")
    theirs.key = cose_key
    opened = open(theirs.encode(), p.app_ring, ReplayWindow(),
                  external_aad=b"devices/dev-0001/up")
    assert (opened.payload, opened.seq, opened.sender_id) == (b"command=reboot", 10, DEVICE)


def test_pycose_kid_in_unprotected_header_opens() -> None:
    """pycose (and other senders) often put the kid in the unprotected bucket."""
    p = make_pair()
    key, kid = independent_key(p, Algorithm.A256GCM)
    msg = Enc0Message(phdr={headers.Algorithm: A256GCM, SEQ_LABEL: 1},
                      uhdr={headers.IV: secrets.token_bytes(12), headers.KID: kid},
                      payload=b"ok")
    msg.key = SymmetricKey(k=key)
    assert open(msg.encode(), p.app_ring, ReplayWindow()).payload == b"ok"


def _pem(private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> tuple[bytes, bytes]:
    return (private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            private.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.mark.parametrize("kind", ["es256", "eddsa"])
def test_sign1_both_directions(kind: str) -> None:
    private = ec.generate_private_key(ec.SECP256R1()) if kind == "es256" \
        else ed25519.Ed25519PrivateKey.generate()
    alg = Es256 if kind == "es256" else EdDSA
    private_pem, public_pem = _pem(private)
    signer = SigningKey(private, sender_id=DEVICE)
    ring = Keyring([signer.verifying_key()])

    # iotsec -> pycose
    ours = seal(b"status=ok", signer, seq=4, external_aad=b"topic")
    decoded = pycose_decode(Sign1Message, ours)
    decoded.key = CoseKey.from_pem_public_key(public_pem.decode())
    decoded.external_aad = b"topic"
    assert decoded.verify_signature()
    assert decoded.payload == b"status=ok" and decoded.phdr[headers.KID] == signer.kid

    # pycose -> iotsec
    theirs = Sign1Message(phdr={headers.Algorithm: alg, headers.KID: signer.kid, SEQ_LABEL: 5},
                          payload=b"status=degraded", external_aad=b"topic")
    theirs.key = CoseKey.from_pem_private_key(private_pem.decode())
    opened = open(theirs.encode(), ring, ReplayWindow(), external_aad=b"topic")
    assert (opened.payload, opened.seq, opened.kind) == (b"status=degraded", 5, "sign1")


def test_derivation_is_symmetric_between_independent_contexts() -> None:
    """The application's view (receive) equals the device's view (send), byte for byte,
    as a third party computes them."""
    p = make_pair("p256", Algorithm.CHACHA20_POLY1305)
    key, kid = independent_key(p, Algorithm.CHACHA20_POLY1305)
    contexts: list[PairContext] = [p.device, p.app]
    assert {c.send.kid for c in contexts} == {kid, p.app.send.kid}
    msg = Enc0Message(phdr={headers.Algorithm: ChaCha20Poly1305Alg, headers.KID: kid,
                            SEQ_LABEL: 0}, uhdr={headers.IV: secrets.token_bytes(12)},
                      payload=b"z")
    msg.key = SymmetricKey(k=key)
    assert open(msg.encode(), p.app_ring, ReplayWindow()).payload == b"z"
