"""Encrypted PKCS#8 private keys under PBES2 with scrypt (RFC 8018, RFC 7914 §7).

pyca/cryptography writes encrypted PKCS#8 only with PBKDF2; iotsec writes its own
``EncryptedPrivateKeyInfo`` with the project's DER encoder::

    EncryptedPrivateKeyInfo ::= SEQUENCE {
        encryptionAlgorithm  AlgorithmIdentifier { PBES2, PBES2-params },
        encryptedData        OCTET STRING }
    PBES2-params ::= SEQUENCE {
        keyDerivationFunc  AlgorithmIdentifier { id-scrypt, scrypt-params },
        encryptionScheme   AlgorithmIdentifier { aes256-CBC, IV OCTET STRING (16) } }
    scrypt-params ::= SEQUENCE {
        salt OCTET STRING, costParameter INTEGER, blockSize INTEGER,
        parallelizationParameter INTEGER, keyLength INTEGER OPTIONAL }

The plaintext is the DER ``PrivateKeyInfo``, PKCS#7-padded and encrypted with AES-256-CBC
under the scrypt-derived key. OpenSSL reads what is written here (``openssl pkey``) and
what it writes with ``openssl pkcs8 -topk8 -scrypt`` is read here.

Reading: a file whose PBES2 key derivation is scrypt is parsed and decrypted here, with a
strict, bounded DER reader and limits on the scrypt cost (a file cannot make the reader
allocate more than :data:`MAX_SCRYPT_MEMORY`); any other encrypted PKCS#8 (the PBKDF2
files iotsec wrote before) is handed to cryptography. Every failure is one
:class:`~iotsec.errors.EncryptedKeyError` that never says more than what was wrong with
the structure: a wrong passphrase and a corrupt ciphertext look alike.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from iotsec.errors import EncryptedKeyError, InputTooLargeError
from iotsec.pki import der

OID_PBES2: Final = "1.2.840.113549.1.5.13"
OID_SCRYPT: Final = "1.3.6.1.4.1.11591.4.11"
OID_AES256_CBC: Final = "2.16.840.1.101.3.4.1.42"

#: Cost written for new keys: N=2^14, r=8, p=2 -- the work of N=2^15 with p=1 (about 90 ms
#: here), in 16 MiB. OpenSSL (3.x) refuses to derive a PBES2 key needing 32 MiB or more
#: (its scrypt ``maxmem`` default, which ``openssl pkey`` cannot raise), so N=2^15, r=8
#: would make keys that ``openssl pkey`` cannot read; the second lane buys the cost back.
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 2
SALT_SIZE: Final = 16
KEY_LENGTH: Final = 32
#: Largest scrypt memory (128 * r * N bytes) a file may ask for when read.
MAX_SCRYPT_MEMORY: Final = 256 * 1024 * 1024
MAX_SCRYPT_P: Final = 16
#: An encrypted PKCS#8 PEM of an RSA-4096 key is about 3.3 KiB; nothing legitimate is larger.
MAX_PEM: Final = 64 * 1024

_PEM_LABEL: Final = b"ENCRYPTED PRIVATE KEY"
_PEM: Final = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----\r?\n"
                         rb"([A-Za-z0-9+/=\r\n]+?)"
                         rb"-----END ENCRYPTED PRIVATE KEY-----")


def _check_cost(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1):
        raise EncryptedKeyError("the scrypt cost parameter N is not a power of two above 1")
    if not 1 <= r <= 1024 or not 1 <= p <= MAX_SCRYPT_P:
        raise EncryptedKeyError("the scrypt block size or parallelisation is out of range")
    if 128 * r * n > MAX_SCRYPT_MEMORY:
        raise EncryptedKeyError(f"the scrypt parameters ask for more than "
                                f"{MAX_SCRYPT_MEMORY // (1024 * 1024)} MiB of memory")


@dataclass(frozen=True, slots=True)
class ScryptCost:
    """scrypt parameters for writing a key; out-of-range values cannot be built."""

    n: int
    r: int
    p: int

    def __post_init__(self) -> None:
        _check_cost(self.n, self.r, self.p)


#: The production cost (N=2^14, r=8, p=2).
DEFAULT_SCRYPT_COST: Final = ScryptCost(SCRYPT_N, SCRYPT_R, SCRYPT_P)
#: The cost :func:`encrypt_der` writes with when none is given, read at each call (not bound
#: when the functions are defined) so that the test suite can write cheap keys: it makes
#: thousands of key stores, and a production-cost scrypt is most of each. Readers always
#: take the cost from the file, so keys written either way load anywhere.
SCRYPT_COST: ScryptCost = DEFAULT_SCRYPT_COST


# --------------------------------------------------------------------------- writing


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return Scrypt(salt=salt, length=length, n=n, r=r, p=p).derive(passphrase)


def encrypt_der(private_key_info: bytes, passphrase: bytes, *,
                cost: ScryptCost | None = None) -> bytes:
    """``EncryptedPrivateKeyInfo`` (DER) around a DER ``PrivateKeyInfo``, under ``cost``
    (default: :data:`SCRYPT_COST` at the time of the call)."""
    if cost is None:
        cost = SCRYPT_COST
    n, r, p = cost.n, cost.r, cost.p
    salt, iv = os.urandom(SALT_SIZE), os.urandom(16)
    key = _scrypt(passphrase, salt, n, r, p, KEY_LENGTH)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(private_key_info) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    kdf = der.sequence(der.oid(OID_SCRYPT),
                       der.sequence(der.octet_string(salt), der.integer(n), der.integer(r),
                                    der.integer(p), der.integer(KEY_LENGTH)))
    scheme = der.sequence(der.oid(OID_AES256_CBC), der.octet_string(iv))
    algorithm = der.sequence(der.oid(OID_PBES2), der.sequence(kdf, scheme))
    return der.sequence(algorithm, der.octet_string(ciphertext))


def to_pem(encrypted: bytes) -> bytes:
    body = base64.encodebytes(encrypted).replace(b"\n", b"")
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return (b"-----BEGIN " + _PEM_LABEL + b"-----\n" + lines + b"\n-----END " + _PEM_LABEL
            + b"-----\n")


def encrypt_private_key(key: PrivateKeyTypes, passphrase: bytes, *,
                        cost: ScryptCost | None = None) -> bytes:
    """The private key as ``ENCRYPTED PRIVATE KEY`` PEM under PBES2-scrypt/AES-256-CBC."""
    info = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return to_pem(encrypt_der(info, passphrase, cost=cost))


# --------------------------------------------------------------------------- reading


def _der_error(message: str) -> EncryptedKeyError:
    return EncryptedKeyError(f"{message} in the encrypted key")


class _Der:
    """A strict DER reader over one buffer: definite, minimal lengths; nothing past the end."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    def done(self) -> bool:
        return self._pos >= self._end

    def read(self, tag: int) -> _Der:
        """The next element, which must have ``tag``; a reader over its content."""
        got, start, stop = der.element(self._data, self._pos, self._end, minimal=True,
                                       error=_der_error)
        if got != tag:
            raise EncryptedKeyError(f"unexpected DER tag {got:#04x} in the encrypted key "
                                    f"(expected {tag:#04x})")
        self._pos = stop
        return _Der(self._data, start, stop)

    def content(self) -> bytes:
        return self._data[self._pos:self._end]

    def oid(self) -> bytes:
        return self.read(der.OBJECT_IDENTIFIER).content()

    def octets(self) -> bytes:
        return self.read(der.OCTET_STRING).content()

    def integer(self, maximum: int) -> int:
        raw = self.read(der.INTEGER).content()
        if not raw or raw[0] & 0x80 or (len(raw) > 1 and raw[0] == 0 and raw[1] < 0x80):
            raise EncryptedKeyError("a DER INTEGER in the encrypted key is negative or "
                                    "not minimal")
        if len(raw) > 8 or int.from_bytes(raw, "big") > maximum:
            raise EncryptedKeyError("a parameter of the encrypted key is out of range")
        return int.from_bytes(raw, "big")

    def finish(self) -> None:
        if not self.done():
            raise EncryptedKeyError("unexpected data after a DER element in the encrypted key")


def _oid(dotted: str) -> bytes:
    return der.oid(dotted)[2:]


def pem_body(pem: bytes) -> bytes:
    """The DER inside an ``ENCRYPTED PRIVATE KEY`` PEM block."""
    if len(pem) > MAX_PEM:
        raise InputTooLargeError(f"an encrypted key is at most {MAX_PEM} bytes")
    found = _PEM.search(pem)
    if found is None:
        raise EncryptedKeyError("not an ENCRYPTED PRIVATE KEY PEM block")
    try:
        return base64.b64decode(re.sub(rb"\s", b"", found.group(1)), validate=True)
    except binascii.Error:
        raise EncryptedKeyError("the encrypted key's PEM body is not base64") from None


def uses_scrypt(encrypted: bytes) -> bool:
    """Whether a DER ``EncryptedPrivateKeyInfo`` is PBES2 with scrypt (structure only)."""
    outer = _Der(encrypted).read(der.SEQUENCE)
    algorithm = outer.read(der.SEQUENCE)
    if algorithm.oid() != _oid(OID_PBES2):
        return False
    return algorithm.read(der.SEQUENCE).read(der.SEQUENCE).oid() == _oid(OID_SCRYPT)


def decrypt_der(encrypted: bytes, passphrase: bytes) -> bytes:
    """The DER ``PrivateKeyInfo`` inside a PBES2-scrypt ``EncryptedPrivateKeyInfo``."""
    if len(encrypted) > MAX_PEM:
        raise InputTooLargeError(f"an encrypted key is at most {MAX_PEM} bytes")
    top = _Der(encrypted)
    outer = top.read(der.SEQUENCE)
    top.finish()
    algorithm = outer.read(der.SEQUENCE)
    if algorithm.oid() != _oid(OID_PBES2):
        raise EncryptedKeyError("the encrypted key is not PBES2-protected")
    params = algorithm.read(der.SEQUENCE)
    algorithm.finish()
    kdf = params.read(der.SEQUENCE)
    if kdf.oid() != _oid(OID_SCRYPT):
        raise EncryptedKeyError("the encrypted key's key derivation is not scrypt")
    sp = kdf.read(der.SEQUENCE)
    kdf.finish()
    salt = sp.octets()
    n = sp.integer(2**32)
    r = sp.integer(1024)
    p = sp.integer(MAX_SCRYPT_P)
    length = KEY_LENGTH if sp.done() else sp.integer(1024)
    sp.finish()
    scheme = params.read(der.SEQUENCE)
    params.finish()
    if scheme.oid() != _oid(OID_AES256_CBC):
        raise EncryptedKeyError("the encrypted key's cipher is not AES-256-CBC")
    iv = scheme.octets()
    scheme.finish()
    ciphertext = outer.octets()
    outer.finish()
    if not 1 <= len(salt) <= 1024 or len(iv) != 16 or length != KEY_LENGTH:
        raise EncryptedKeyError("the encrypted key's salt, IV or key length is invalid")
    if not ciphertext or len(ciphertext) % 16:
        raise EncryptedKeyError("the encrypted key's ciphertext is not whole AES blocks")
    _check_cost(n, r, p)
    key = _scrypt(passphrase, salt, n, r, p, length)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise EncryptedKeyError("cannot decrypt the key (wrong passphrase or a damaged "
                                "file)") from None


def decrypt_private_key(pem: bytes, passphrase: bytes) -> PrivateKeyTypes:
    """Load an encrypted PKCS#8 PEM: PBES2-scrypt here, anything else (PBKDF2) through
    cryptography."""
    encrypted = pem_body(pem)
    if uses_scrypt(encrypted):
        info = decrypt_der(encrypted, passphrase)
        try:
            return serialization.load_der_private_key(info, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise EncryptedKeyError("cannot decrypt the key (wrong passphrase or a damaged "
                                    "file)") from None
    try:
        return serialization.load_der_private_key(encrypted, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise EncryptedKeyError("cannot decrypt the key (wrong passphrase or a damaged "
                                "file)") from None


__all__ = ["DEFAULT_SCRYPT_COST", "MAX_PEM", "SCRYPT_COST", "SCRYPT_N", "ScryptCost",
           "decrypt_der", "decrypt_private_key", "encrypt_der",
           "encrypt_private_key", "pem_body", "to_pem", "uses_scrypt"]
