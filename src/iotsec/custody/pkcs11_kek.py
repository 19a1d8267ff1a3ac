"""Key-encryption keys in a PKCS#11 token (the :class:`~iotsec.protect.kek.KeyWrapper`
interface).

:class:`Pkcs11KekStore` holds AES-256 KEKs generated inside the token as non-extractable,
sensitive objects; :class:`Pkcs11Kek` wraps data keys with ``C_Encrypt`` / ``C_Decrypt`` and
``CKM_AES_GCM``, the associated data in ``CK_GCM_PARAMS``. Their KEK ids are
``hsm:<label>``; a retired KEK is relabelled ``retired-<label>`` and no longer answers to its
id. The token session, login and error translation are :mod:`iotsec.custody.pkcs11`'s.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e
from pkcs11.mechanisms import GCMParams

from iotsec.custody.pkcs11_token import (
    HSM_KEK_PREFIX,
    RETIRED_PREFIX,
    Pkcs11Token,
    translate,
)
from iotsec.errors import (
    DataKeyUnwrapError,
    KeyTypeMismatchError,
    Pkcs11KeyNotFoundError,
    RetiredKekError,
    UnknownKekError,
)
from iotsec.protect.kek import MAX_DATA_KEY, MIN_DATA_KEY, check_data_key, check_kek_id, wrap_aad

_WRAP_VERSION: Final = 2  # FileKek wraps are version 1; the two never mix up
_NONCE: Final = 12
_TAG: Final = 16
# Failures of C_Decrypt that mean "this ciphertext does not authenticate". SoftHSM2 answers
# CKR_GENERAL_ERROR for a GCM tag mismatch; other tokens use CKR_ENCRYPTED_DATA_INVALID.
_UNWRAP_FAILURES: Final = (p11e.EncryptedDataInvalid, p11e.EncryptedDataLenRange,
                           p11e.GeneralError, p11e.FunctionFailed, p11e.DataLenRange)



def hsm_kek_id(label: str) -> str:
    return check_kek_id(HSM_KEK_PREFIX + label)


def hsm_kek_label(key_id: str) -> str:
    if not key_id.startswith(HSM_KEK_PREFIX):
        raise UnknownKekError(f"key-encryption key {key_id!r} is not held in a PKCS#11 token")
    return key_id[len(HSM_KEK_PREFIX):]


class Pkcs11Kek:
    """An AES-256 KEK in the token; wraps data keys with AES-GCM inside the token.

    Wrapped form: version 2 (1 byte) || 96-bit random nonce || AES-GCM(data key) || tag, with
    associated data ``"iotsec kek wrap v1" 0x00 key_id 0x00 aad`` as for the file KEK.
    """

    __slots__ = ("_id", "_label", "_token")

    def __init__(self, token: Pkcs11Token, label: str) -> None:
        self._token = token
        self._label = label
        self._id = hsm_kek_id(label)

    @property
    def key_id(self) -> str:
        return self._id

    @property
    def label(self) -> str:
        return self._label

    def _aad(self, aad: bytes) -> bytes:
        return wrap_aad(self._id, aad)

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        check_data_key(data_key)
        nonce = secrets.token_bytes(_NONCE)
        params = GCMParams(nonce, self._aad(aad), _TAG * 8)
        sealed = self._token.use(
            self._label, ObjectClass.SECRET_KEY,
            lambda key: bytes(key.encrypt(data_key, mechanism=Mechanism.AES_GCM,
                                          mechanism_param=params)), "wrap a data key")
        return bytes((_WRAP_VERSION,)) + nonce + sealed

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        size = len(wrapped) - 1 - _NONCE - _TAG
        if not MIN_DATA_KEY <= size <= MAX_DATA_KEY or wrapped[0] != _WRAP_VERSION:
            raise DataKeyUnwrapError(f"a data key wrapped by {self._id!r} is malformed")
        params = GCMParams(wrapped[1:1 + _NONCE], self._aad(aad), _TAG * 8)
        body = wrapped[1 + _NONCE:]

        def decrypt(key: Any) -> bytes:
            try:
                return bytes(key.decrypt(body, mechanism=Mechanism.AES_GCM,
                                         mechanism_param=params))
            except _UNWRAP_FAILURES:
                raise DataKeyUnwrapError(
                    f"a data key does not unwrap under key-encryption key {self._id!r}: it "
                    "was altered, moved, or wrapped by another key with the same id") from None

        return self._token.use(self._label, ObjectClass.SECRET_KEY, decrypt,
                               "unwrap a data key")

    def __repr__(self) -> str:
        return f"Pkcs11Kek({self._id!r}, token={self._token.label!r})"


class Pkcs11KekStore:
    """AES-256 KEKs in a token (a :class:`~iotsec.protect.kek.KekResolver` for ids
    ``hsm:<label>``). Retiring a KEK relabels it ``retired-<label>``: it no longer answers to
    its id, yet stays in the token until destroyed, so a forgotten file can still be
    recovered by reinstating it."""

    def __init__(self, token: Pkcs11Token) -> None:
        self.token = token
        self._cache: dict[str, Pkcs11Kek] = {}

    def __repr__(self) -> str:
        return f"Pkcs11KekStore(token={self.token.label!r})"

    def _labels(self, prefix: str) -> list[str]:
        return sorted(str(o.label) for o in self.token.objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: P11KeyType.AES})
            if str(o.label).startswith(prefix))

    def ids(self) -> list[str]:
        """Ids of the usable (not retired) KEKs in the token."""
        return [hsm_kek_id(label) for label in self._labels("kek-")]

    def retired_ids(self) -> list[str]:
        return [hsm_kek_id(label[len(RETIRED_PREFIX):])
                for label in self._labels(RETIRED_PREFIX + "kek-")]

    def generate(self) -> Pkcs11Kek:
        """A new non-extractable AES-256 KEK in the token (not yet active)."""
        label = f"kek-{secrets.token_hex(8)}"
        with self.token.session() as slot:
            try:
                slot.handle.generate_key(
                    P11KeyType.AES, 256, label=label, id=secrets.token_bytes(16), store=True,
                    capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                    template={Attribute.TOKEN: True, Attribute.PRIVATE: True,
                              Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                              Attribute.WRAP: False, Attribute.UNWRAP: False})
            except p11e.PKCS11Error as exc:
                raise translate(exc, f"cannot generate a key-encryption key in token "
                                 f"{self.token.label!r}") from None
        kek = Pkcs11Kek(self.token, label)
        self._cache[kek.key_id] = kek
        return kek

    def kek(self, key_id: str) -> Pkcs11Kek:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        label = hsm_kek_label(check_kek_id(key_id))
        try:
            self.token.use(label, ObjectClass.SECRET_KEY, lambda key: _require_aes(key, label),
                           "find")
        except Pkcs11KeyNotFoundError:
            if self.token.exists(RETIRED_PREFIX + label, ObjectClass.SECRET_KEY):
                raise RetiredKekError(f"key-encryption key {key_id!r} was retired") from None
            if self.token.exists(label):
                raise KeyTypeMismatchError(f"key {label!r} in token {self.token.label!r} is "
                                           "not an AES key-encryption key") from None
            raise UnknownKekError(f"key-encryption key {key_id!r} is not in token "
                                  f"{self.token.label!r}") from None
        kek = Pkcs11Kek(self.token, label)
        self._cache[key_id] = kek
        return kek

    def _relabel(self, old: str, new: str) -> None:
        def relabel(key: Any) -> None:
            key[Attribute.LABEL] = new

        self.token.use(old, ObjectClass.SECRET_KEY, relabel, "relabel")
        self.token.forget()
        self._cache.clear()

    def retire(self, key_id: str, *, destroy: bool = False) -> None:
        """Stop ``key_id`` from unwrapping: relabel it, or with ``destroy`` delete it."""
        label = hsm_kek_label(key_id)
        if destroy:
            self.token.use(label, ObjectClass.SECRET_KEY, lambda key: key.destroy(), "destroy")
            self.token.forget()
            self._cache.clear()
            return
        self._relabel(label, RETIRED_PREFIX + label)

    def reinstate(self, key_id: str) -> None:
        label = hsm_kek_label(key_id)
        self._relabel(RETIRED_PREFIX + label, label)


def _require_aes(key: Any, label: str) -> None:
    if key.key_type != P11KeyType.AES or int(key.key_length) != 256:
        raise KeyTypeMismatchError(f"key {label!r} is not an AES-256 key-encryption key")


__all__ = ["Pkcs11Kek", "Pkcs11KekStore", "hsm_kek_id", "hsm_kek_label"]
