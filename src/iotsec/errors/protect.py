"""Errors: data protection (end-to-end payloads, encryption at rest)."""

from __future__ import annotations

from iotsec.errors.base import IotsecError, KeyCustodyError, MalformedInputError

__all__ = [
    "CborError", "DataKeyUnwrapError", "DataProtectionError", "KekUnlockError",
    "PayloadAlgorithmError", "PayloadAuthenticationError", "PayloadError", "PayloadKeyError",
    "PayloadMalformedError", "PayloadReplayError", "PayloadTooOldError", "PayloadUnknownKeyError",
    "ProtectError", "RecordAuthenticationError", "RecordFormatError", "StreamChunkError",
    "StreamFormatError", "StreamHeaderError", "StreamTruncatedError", "UnknownKekError"
]


class ProtectError(IotsecError):
    """A protected payload, an encrypted file or an encrypted record that is refused.
    Messages name what failed and where, never plaintext or key material."""

    status = 422
    code = "protect"


class CborError(ProtectError, MalformedInputError):
    """Bytes that are not strict, well-formed CBOR within the parser's limits."""

    status = 400
    code = "malformed-cbor"


class PayloadError(ProtectError):
    code = "payload"


class PayloadMalformedError(PayloadError, MalformedInputError):
    """Not a COSE_Encrypt0/COSE_Sign1 message iotsec accepts (shape, headers, sizes)."""

    status = 400
    code = "payload-malformed"
    default_hint = "send a tagged COSE_Encrypt0 or COSE_Sign1 made by an iotsec-compatible sender"


class PayloadKeyError(PayloadError):
    """A key of the wrong type for the operation, keys on different curves, or an invalid
    pairing parameter (identity, salt)."""

    code = "payload-key"
    default_hint = ("use X25519 or P-256 keys for encryption and P-256 or Ed25519 keys for "
                    "signing, the same curve on both sides")


class PayloadUnknownKeyError(PayloadError):
    """The message names a key id (kid) the receiver does not hold."""

    code = "payload-unknown-key"
    default_hint = ("check that both sides derived the pair key from the same keys, identities, "
                    "algorithm and salt, and that the key has not been retired")


class PayloadAlgorithmError(PayloadError):
    """The message's algorithm is unsupported or differs from the one bound to its key."""

    code = "payload-algorithm"
    default_hint = "seal with the algorithm the pair key was established for"


class PayloadAuthenticationError(PayloadError):
    """The authentication tag or signature does not verify: altered, sealed for another
    recipient or with another key, or bound to other external data."""

    code = "payload-authentication"
    default_hint = "the message was altered or not sealed for this recipient; discard it"


class PayloadReplayError(PayloadError):
    """The sender's sequence number was already accepted."""

    code = "payload-replayed"
    default_hint = "senders must use a new, increasing sequence number for every message"


class PayloadTooOldError(PayloadError):
    """The sequence number is below the receiver's acceptance window."""

    code = "payload-too-old"
    default_hint = "the message arrived too late (or is a replay); the sender should resend it"


class DataProtectionError(ProtectError):
    code = "data-protection"


class StreamFormatError(DataProtectionError, MalformedInputError):
    """Not an iotsec encrypted stream: wrong magic or version, invalid lengths, or data after
    the final chunk."""

    status = 400
    code = "stream-format"
    default_hint = "give a file written by 'iotsec data encrypt'"


class StreamHeaderError(DataProtectionError):
    """The stream header does not authenticate: altered, or written under another
    key-encryption key with the same id, or with other associated data."""

    code = "stream-header"
    default_hint = "the file was altered; restore it from a trusted copy"


class StreamChunkError(DataProtectionError):
    """A chunk does not authenticate: altered, reordered, cut short or taken from another file."""

    code = "stream-chunk"
    default_hint = "the file was altered; restore it from a trusted copy"


class StreamTruncatedError(DataProtectionError):
    """The stream ends before its final chunk."""

    code = "stream-truncated"
    default_hint = "the file is incomplete; copy it again from its source"


class RecordFormatError(DataProtectionError, MalformedInputError):
    status = 400
    code = "record-format"
    default_hint = "the stored value is not an iotsec encrypted record"


class RecordAuthenticationError(DataProtectionError):
    """An encrypted record does not open for this table, record id and field: altered, moved
    to another record, or encrypted under another key-encryption key."""

    code = "record-authentication"
    default_hint = "the stored value was altered or copied from another record"


class UnknownKekError(DataProtectionError, KeyCustodyError):
    """Data names a key-encryption key that is not in custody."""

    status = 500
    code = "unknown-kek"
    default_hint = "restore the key-encryption key from backup (or use the home it was made in)"


class KekUnlockError(KeyCustodyError):
    """A key-encryption key file cannot be unwrapped: wrong passphrase, or the file was
    altered."""

    code = "kek-unlock"
    default_hint = "check IOTSEC_CA_PASSPHRASE (or the ca-passphrase file in the home)"


class DataKeyUnwrapError(KeyCustodyError):
    """A wrapped data key does not unwrap under the key-encryption key it names."""

    code = "data-key-unwrap"
    default_hint = "the wrapped key was altered or belongs to another key-encryption key"
