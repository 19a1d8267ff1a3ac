"""Errors: key custody: PKCS#11 tokens, key-encryption key rotation."""

from __future__ import annotations

from iotsec.errors.base import ConflictError, KeyCustodyError, NotFoundError
from iotsec.errors.protect import UnknownKekError

__all__ = [
    "EncryptedKeyError", "KekRotationError", "KeyTypeMismatchError", "Pkcs11Error",
    "Pkcs11KeyNotFoundError", "Pkcs11ModuleError", "Pkcs11PinError", "Pkcs11TokenNotFoundError",
    "RetiredKekError"
]


class Pkcs11Error(KeyCustodyError):
    """A PKCS#11 token refused or failed an operation. Messages name the module, the token
    and the key label, never the PIN."""

    code = "pkcs11"
    default_hint = "check the token with 'iotsec keys list' and the PKCS#11 module's logs"


class Pkcs11ModuleError(Pkcs11Error):
    """The PKCS#11 module (shared library) is not configured, missing, or not loadable."""

    code = "pkcs11-module"
    default_hint = ("install the module (for SoftHSM2: the Debian package softhsm2) and set "
                    "IOTSEC_PKCS11_MODULE to its path")


class Pkcs11TokenNotFoundError(Pkcs11Error):
    """No token with the configured label is present."""

    code = "pkcs11-token-not-found"
    default_hint = ("list the tokens (for SoftHSM2: 'softhsm2-util --show-slots') and set "
                    "IOTSEC_PKCS11_TOKEN to the token's label")


class Pkcs11PinError(Pkcs11Error):
    """The token refused the user PIN (wrong, invalid, or the token is locked)."""

    code = "pkcs11-pin"
    default_hint = "check IOTSEC_PKCS11_PIN; repeated failures lock the token"


class Pkcs11KeyNotFoundError(Pkcs11Error, NotFoundError):
    """No key with the label in the token (a :class:`NotFoundError`, as a missing label is
    in every key store)."""

    status = 404
    code = "pkcs11-key-not-found"
    default_hint = "list the token's keys with 'iotsec keys list'"


class KeyTypeMismatchError(KeyCustodyError):
    """A key of the wrong type for the operation (an AES key asked to sign, a signing key
    asked to wrap data keys, an unsupported curve)."""

    status = 422
    code = "key-type-mismatch"
    default_hint = "use a signing key (ECDSA/RSA) to sign and an AES-256 key to wrap data keys"


class RetiredKekError(UnknownKekError):
    """Data names a key-encryption key that was retired by a rotation."""

    code = "retired-kek"
    default_hint = ("re-wrap the data under the active key: reinstate the old key with "
                    "'iotsec keys reinstate ID', then run 'iotsec keys rotate kek' again")


class KekRotationError(KeyCustodyError, ConflictError):
    """A key-encryption key rotation cannot proceed (another one is running, or records
    still depend on a key that was to be retired)."""

    status = 409
    code = "kek-rotation"
    default_hint = "run 'iotsec keys report', then 'iotsec keys rotate kek' again to resume"


class EncryptedKeyError(KeyCustodyError):
    """An encrypted private key (PKCS#8) that cannot be read: malformed, protected with
    parameters outside the allowed bounds, or not decrypting under the passphrase (the two
    look alike on purpose)."""

    code = "encrypted-key"
    default_hint = "check the passphrase, or restore the key file from backup"
