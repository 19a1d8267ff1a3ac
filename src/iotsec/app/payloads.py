"""End-to-end payloads for debugging (``iotsec payload``): keys from files, one COSE
message at a time, and the replay window kept in a state file between runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from iotsec.errors import InvalidInputError, PayloadAlgorithmError, PayloadKeyError
from iotsec.filesystem import write_private_file
from iotsec.protect import payload
from iotsec.protect.pairing import (
    Algorithm,
    PairContext,
    SigningKey,
    VerifyingKey,
    as_agreement_private,
    as_agreement_public,
    as_signing_private,
    as_verifying_public,
    establish,
    load_private_key,
    load_public_key,
)
from iotsec.protect.replay import ReplayWindow

__all__ = [
    "KEY_TYPES", "MAX_WINDOW_STATE", "KeyPair", "default_seq", "generate_keypair",
    "load_window", "open_payload", "pair", "save_window", "seal_payload"
]

#: A replay-window state file is a few hundred bytes; nothing legitimate is larger.
MAX_WINDOW_STATE = 64 * 1024


# --- payloads (debugging) ------------------------------------------------------------------


KEY_TYPES = ("x25519", "p256", "ed25519")


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes


def generate_keypair(key_type: str) -> KeyPair:
    """A new static key pair as unencrypted PKCS#8 / SubjectPublicKeyInfo PEM."""
    kind = key_type.strip().lower()
    private: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if kind == "x25519":
        private = x25519.X25519PrivateKey.generate()
    elif kind == "p256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise InvalidInputError(f"unknown key type {key_type!r}",
                                hint=f"choose one of: {', '.join(KEY_TYPES)}")
    return KeyPair(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        private.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))


def pair(own_key: bytes, peer_public: bytes, *, own_id: str, peer_id: str, salt: bytes,
         alg: Algorithm) -> PairContext:
    """The pair keys of one side, from PEM/DER key files."""
    return establish(as_agreement_private(load_private_key(own_key)),
                     as_agreement_public(load_public_key(peer_public)),
                     own_id=own_id, peer_id=peer_id, salt=salt, alg=alg)


def default_seq() -> int:
    """A sequence number for a one-off message: the time in microseconds (it grows)."""
    return time.time_ns() // 1000


def seal_payload(data: bytes, *, sender_key: bytes, sender_id: str, alg: Algorithm, seq: int,
                 recipient_public: bytes | None = None, recipient_id: str | None = None,
                 salt: bytes | None = None, external_aad: bytes = b"") -> bytes:
    """Seal one message: COSE_Encrypt0 for A256GCM/ChaCha20-Poly1305 (needs the recipient's
    public key, id and the pairing salt), COSE_Sign1 for ES256/EdDSA."""
    if alg.is_aead:
        if recipient_public is None or recipient_id is None or salt is None:
            raise InvalidInputError(f"{alg.cose_name} encrypts: give the recipient's public "
                                    "key, its id and the pairing salt")
        context = pair(sender_key, recipient_public, own_id=sender_id, peer_id=recipient_id,
                       salt=salt, alg=alg)
        return payload.seal(data, context.send, seq=seq, external_aad=external_aad)
    signing = SigningKey(as_signing_private(load_private_key(sender_key)), sender_id=sender_id)
    if signing.alg is not alg:
        raise PayloadKeyError(f"the sender key signs with {signing.alg.cose_name}, not "
                              f"{alg.cose_name}")
    return payload.seal(data, signing, seq=seq, external_aad=external_aad)


def open_payload(message: bytes, *, sender_public: bytes, sender_id: str,
                 window: ReplayWindow, recipient_key: bytes | None = None,
                 recipient_id: str | None = None, salt: bytes | None = None,
                 external_aad: bytes = b"") -> payload.Opened:
    """Open one message from ``sender_id``. The algorithm comes from the message, but the key
    derived for it must carry the message's kid, so a changed algorithm is refused."""
    parsed = payload.parse(message)
    keyring = payload.Keyring()
    if parsed.kind == "encrypt0":
        if recipient_key is None or recipient_id is None or salt is None:
            raise InvalidInputError("the message is encrypted: give the recipient's private "
                                    "key, its id and the pairing salt")
        try:
            alg = Algorithm(parsed.alg)
        except ValueError:
            alg = Algorithm.ES256  # not an encryption algorithm: refused just below
        if not alg.is_aead:
            raise PayloadAlgorithmError(f"a COSE_Encrypt0 with algorithm "
                                        f"{parsed.algorithm_name} is not supported")
        keyring.add(pair(recipient_key, sender_public, own_id=recipient_id,
                         peer_id=sender_id, salt=salt, alg=alg).receive)
    else:
        keyring.add(VerifyingKey(as_verifying_public(load_public_key(sender_public)),
                                 sender_id=sender_id))
    return payload.open(message, keyring, window, external_aad=external_aad)


def load_window(path: Path | None) -> ReplayWindow:
    """A replay window from its state file (a fresh one if there is no file yet)."""
    if path is None or not path.exists():
        return ReplayWindow()
    if path.stat().st_size > MAX_WINDOW_STATE:
        raise InvalidInputError(f"{path} is larger than {MAX_WINDOW_STATE} bytes")
    try:
        state = json.loads(path.read_bytes())
    except ValueError:
        raise InvalidInputError(f"{path} is not a replay window state (JSON)") from None
    return ReplayWindow.from_state(state)


def save_window(path: Path, window: ReplayWindow) -> None:
    write_private_file(path, (json.dumps(window.state(), sort_keys=True) + "\n").encode("ascii"),
                       overwrite=True)
