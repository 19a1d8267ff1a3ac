"""The key-custody interface: named keys held by a store, and the audited signers it hands
out.

A :class:`KeyStore` (files: :mod:`iotsec.custody.file_keys`; PKCS#11:
:mod:`iotsec.custody.pkcs11`) holds CA keys, which it hands out as a
:class:`~iotsec.pki.keys.Signer`, and firmware signing keys, handed out through their own
pair of calls, :meth:`KeyStore.generate_image_key` and :meth:`KeyStore.load_image_key`, as an
:class:`~iotsec.firmware.image_keys.ImageSigner` (``sign_digest`` over the 32-byte SHA-256
image digest, the MCUboot algorithms: ECDSA P-256, pure Ed25519 over the digest, RSA-PSS). A
label names one key with one purpose: ``load`` refuses a firmware key and
``load_image_key`` refuses a CA key, with :class:`~iotsec.errors.KeyTypeMismatchError`.
Every signature made with a key in custody is told to ``on_use`` (the key-use record).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from iotsec.errors import KeyCustodyError

if TYPE_CHECKING:
    # Types only: a command that opens the key store without signing (every read command)
    # does not import cryptography, the firmware or the protect packages for them.
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

    from iotsec.firmware.image_keys import FirmwareKeyType, FirmwarePublicKey, ImageSigner
    from iotsec.pki.keys import KeyType, Signer
    from iotsec.protect.kek import KeyWrapper

__all__ = [
    "LABEL", "SIGN", "SIGN_IMAGE", "UNWRAP", "CustodyImageSigner", "CustodySigner", "KeyStore",
    "RecordedKek", "RecordingStore", "check_label"
]

#: A key label: one rule for every store, so that a home can move between custodies.
LABEL: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_label(label: str) -> str:
    """``label`` if it is a valid key label; :class:`~iotsec.errors.KeyCustodyError` if not."""
    if not isinstance(label, str) or not LABEL.fullmatch(label):
        raise KeyCustodyError(f"invalid key label {label!r}",
                              hint="labels are lower-case letters, digits, '.', '_' and '-'")
    return label


#: The operation ``on_use`` is told of for a certificate or CRL signature.
SIGN = "sign"
#: The operation ``on_use`` is told of for a firmware image signature.
SIGN_IMAGE = "sign-image"
#: The operation ``on_use`` is told of for a data key unwrapped by a key-encryption key.
UNWRAP = "unwrap"


class KeyStore(Protocol):
    """Named keys in custody. Labels are plain names such as ``root-ca``."""

    def generate(self, label: str, key_type: KeyType) -> Signer: ...

    def load(self, label: str) -> Signer: ...

    def exists(self, label: str) -> bool:
        """Whether ``label`` names a key of any purpose (labels are one namespace)."""
        ...

    def generate_image_key(self, label: str, key_type: FirmwareKeyType) -> ImageSigner:
        """Generate a firmware signing key in custody (never overwrites a label)."""
        ...

    def load_image_key(self, label: str) -> ImageSigner:
        """The firmware signing key ``label``; a CA key or a missing label is refused."""
        ...



class RecordingStore:
    """What a key store shares with the key-use record: ``on_use(label, operation)``, told of
    every signature its signers make. Signers are given :meth:`_notify`, which reads
    ``on_use`` at each signature, so a hook set after the store was opened (the runtime
    does) still hears of every one."""

    on_use: Callable[[str, str], None] | None

    def _notify(self, label: str, operation: str) -> None:
        if self.on_use is not None:
            self.on_use(label, operation)


class CustodyImageSigner:
    """An :class:`~iotsec.firmware.image_keys.ImageSigner` handed out by a key store: it signs
    through ``inner`` and tells ``on_use(label, "sign-image")`` after every signature (the
    key-use record), so a custody key is never used unrecorded."""

    def __init__(self, label: str, inner: ImageSigner,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self.label = label
        self._inner = inner
        self.on_use = on_use

    @property
    def key_type(self) -> FirmwareKeyType:
        return self._inner.key_type

    def public_key(self) -> FirmwarePublicKey:
        return self._inner.public_key()

    def sign_digest(self, digest: bytes) -> bytes:
        signature = self._inner.sign_digest(digest)
        if self.on_use is not None:
            self.on_use(self.label, SIGN_IMAGE)
        return signature

    def __repr__(self) -> str:
        return f"CustodyImageSigner({self.label!r}, {self._inner!r})"


class CustodySigner:
    """A :class:`Signer` handed out by a key store: it signs through ``inner`` and tells
    ``on_use(label, "sign")`` after every signature (the key-use record of CA signing)."""

    def __init__(self, label: str, inner: Signer,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self.label = label
        self._inner = inner
        self.on_use = on_use

    @property
    def key_type(self) -> KeyType:
        return self._inner.key_type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._inner.public_key()

    def sign(self, data: bytes) -> bytes:
        signature = self._inner.sign(data)
        if self.on_use is not None:
            self.on_use(self.label, SIGN)
        return signature

    def __repr__(self) -> str:
        return f"CustodySigner({self.label!r}, {self._inner!r})"


class RecordedKek:
    """A :class:`~iotsec.protect.kek.KeyWrapper` that tells ``on_use(key_id, "unwrap")``
    after every unwrap: opening an encrypted secret or an encrypted file is recorded."""

    def __init__(self, inner: KeyWrapper, on_use: Callable[[str, str], None]) -> None:
        self._inner = inner
        self._on_use = on_use

    @property
    def key_id(self) -> str:
        return self._inner.key_id

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        return self._inner.wrap(data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        key = self._inner.unwrap(wrapped, aad)
        self._on_use(self._inner.key_id, UNWRAP)
        return key

    def __repr__(self) -> str:
        return f"RecordedKek({self._inner!r})"
