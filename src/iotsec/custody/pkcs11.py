"""PKCS#11 key custody: CA signing keys and key-encryption keys inside a token (an HSM).

Keys are generated *inside* the token as non-extractable, sensitive token objects; iotsec
only ever holds handles. The same token implements both custody interfaces:

* :class:`Pkcs11KeyStore` is a :class:`~iotsec.custody.base.KeyStore`; its signers implement
  :class:`~iotsec.pki.keys.Signer`, so the CA signs certificates and CRLs through the token.
  ECDSA uses ``CKM_ECDSA`` over a digest computed here (SoftHSM2 2.6 has no
  ``CKM_ECDSA_SHA256``); the token returns ``r || s``, which is DER-encoded as X.509 wants.
  RSA uses ``CKM_SHA256_RSA_PKCS``.
* The same store holds firmware signing keys (:mod:`iotsec.custody.pkcs11_image`:
  ECDSA P-256, Ed25519 with ``CKM_EDDSA``, RSA-PSS), marked apart from the CA keys.
* The same token holds AES-256 key-encryption keys (:mod:`iotsec.custody.pkcs11_kek`), whose
  KEK ids are ``hsm:<label>``, so a stored record names the custody its key lives in.

The PIN comes from the settings (the environment), is passed to ``C_Login`` and is never
logged nor put in an exception message. A :class:`Pkcs11Token` logs in once, keeps one
session and serialises the calls into the module (python-pkcs11 initialises modules for
single-threaded use), so a server's threads can share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e

from iotsec.custody.base import CustodyImageSigner
from iotsec.errors import (
    ConflictError,
    KeyCustodyError,
    KeyTypeMismatchError,
    Pkcs11Error,
    Pkcs11KeyNotFoundError,
    Pkcs11ModuleError,
    Pkcs11PinError,
    Pkcs11TokenNotFoundError,
)
from iotsec.firmware.image_keys import FirmwareKeyType
from iotsec.pki.keys import KeyType, Signer

T = TypeVar("T")

#: KEK ids of keys held in a PKCS#11 token start with this.
HSM_KEK_PREFIX: Final = "hsm:"
#: Label prefix given to a retired KEK (it no longer answers to its id).
RETIRED_PREFIX: Final = "retired-"

_OID_P256: Final = bytes.fromhex("06082a8648ce3d030107")
_OID_P384: Final = bytes.fromhex("06052b81040022")
_MISSING_KEY: Final = (p11e.NoSuchKey, p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)
# The file key store's label rule, so a home can move between the two custodies.
_LABEL: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise KeyCustodyError(f"invalid key label {label!r}",
                              hint="labels are lower-case letters, digits, '.', '_' and '-'")
    return label


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """Where the token is: the module's path, the token label and the user PIN."""

    module: Path
    token_label: str
    pin: str

    def __repr__(self) -> str:
        return (f"Pkcs11Config(module={str(self.module)!r}, "
                f"token_label={self.token_label!r}, pin=<hidden>)")


@dataclass(frozen=True, slots=True)
class TokenKey:
    """A key in the token as ``iotsec keys list`` shows it (no secret attribute is read)."""

    label: str
    kind: str  # signing | image-signing | kek | retired-kek | other
    key_type: str  # ecdsa-p256 | ecdsa-p384 | rsa-3072 | aes-256 | ...
    extractable: bool
    sensitive: bool


def _curve_of(params: bytes) -> KeyType:
    if params == _OID_P256:
        return KeyType.ECDSA_P256
    if params == _OID_P384:
        return KeyType.ECDSA_P384
    raise KeyTypeMismatchError("the token's EC key is on a curve iotsec does not sign with",
                               hint="use a P-256 or P-384 key")


def ec_point(encoded: bytes) -> bytes:
    """The raw point from CKA_EC_POINT: a DER OCTET STRING (PKCS#11 2.40) or, from some
    tokens, the bare point."""
    if len(encoded) > 2 and encoded[0] == 0x04:
        if encoded[1] < 0x80 and encoded[1] == len(encoded) - 2:
            return encoded[2:]
        if encoded[1] == 0x81 and encoded[2] == len(encoded) - 3:
            return encoded[3:]
    return encoded


def _public_key(session_key: Any, key_type: KeyType) -> CertificateIssuerPublicKeyTypes:
    if key_type is KeyType.RSA_3072:
        modulus = int.from_bytes(session_key[Attribute.MODULUS], "big")
        exponent = int.from_bytes(session_key[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    curve: ec.EllipticCurve = ec.SECP256R1() if key_type is KeyType.ECDSA_P256 \
        else ec.SECP384R1()
    return ec.EllipticCurvePublicKey.from_encoded_point(
        curve, ec_point(bytes(session_key[Attribute.EC_POINT])))


def _key_type_of(key: Any) -> KeyType:
    """The iotsec type of a token private or public key (or a mismatch error)."""
    kind = key.key_type
    if kind == P11KeyType.EC:
        return _curve_of(bytes(key[Attribute.EC_PARAMS]))
    if kind == P11KeyType.RSA:
        if int(key.key_length) >= 3072:
            return KeyType.RSA_3072
        raise KeyTypeMismatchError(f"the token's RSA key {key.label!r} has fewer than 3072 bits")
    raise KeyTypeMismatchError(f"the token's key {key.label!r} is not a signing key")


class _Session:
    """One PKCS#11 session and the key handles found through it."""

    __slots__ = ("handle", "keys")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.keys: dict[tuple[str, int], Any] = {}


# python-pkcs11 calls C_Initialize without arguments, which tells the module that the
# application will not call it from several threads at once; it releases the GIL during
# calls, so iotsec serialises every call into one module itself (per module path, across
# all connections in the process).
_MODULE_LOCKS: dict[str, threading.RLock] = {}
_MODULE_LOCKS_GUARD = threading.Lock()


def _module_lock(path: Path) -> threading.RLock:
    with _MODULE_LOCKS_GUARD:
        return _MODULE_LOCKS.setdefault(str(path), threading.RLock())


class Pkcs11Token:
    """A logged-in token: loads the module, finds the token by label, logs in with the PIN
    and keeps one session. Calls are serialised (see :func:`_module_lock`), so a token may
    be shared by the threads of a server.

    With ``lazy``, nothing happens until the first use: the module is loaded, the token
    found and the PIN presented when a key is first looked up, so a process that signs
    nothing never opens a session (and a wrong PIN fails only the command that needs it)."""

    def __init__(self, config: Pkcs11Config, *, lazy: bool = False) -> None:
        self.config = config
        self._lock = _module_lock(config.module)
        self._token: Any = None
        self._slot: _Session | None = None
        self._closed = False
        if not lazy:
            with self._lock:
                self._connect()

    def _connect(self) -> _Session:
        """Load the module, find the token and log in (once); the caller holds the lock."""
        if self._slot is not None:
            return self._slot
        if self._closed:
            raise Pkcs11Error(f"the connection to token {self.label!r} is closed")
        config = self.config
        lib = _load_module(config.module)
        try:
            self._token = lib.get_token(token_label=config.token_label)
        except p11e.NoSuchToken:
            raise Pkcs11TokenNotFoundError(
                f"no PKCS#11 token labelled {config.token_label!r} in "
                f"{config.module}") from None
        except p11e.MultipleTokensReturned:
            raise Pkcs11Error(f"more than one PKCS#11 token is labelled "
                              f"{config.token_label!r}",
                              hint="give each token a unique label") from None
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"cannot list the tokens of {config.module}") from None
        self._slot = self._open()
        return self._slot

    @property
    def connected(self) -> bool:
        """Whether a session is open (with ``lazy``, only after the first use)."""
        return self._slot is not None

    def __repr__(self) -> str:
        return f"Pkcs11Token({self.config!r})"

    @property
    def label(self) -> str:
        return self.config.token_label

    def _open(self) -> _Session:
        try:
            try:
                return _Session(self._token.open(rw=True, user_pin=self.config.pin))
            except p11e.UserAlreadyLoggedIn:
                # Login state is per process and token: another connection in this process
                # has already logged in, and this session shares that login.
                return _Session(self._token.open(rw=True))
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange):
            raise Pkcs11PinError(f"the PKCS#11 token {self.label!r} refused the PIN") from None
        except (p11e.PinLocked, p11e.PinExpired):
            raise Pkcs11PinError(f"the user PIN of PKCS#11 token {self.label!r} is locked or "
                                 "expired",
                                 hint="the token's security officer must reset the user "
                                 "PIN") from None
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"cannot open a session on token {self.label!r}") from None

    @contextlib.contextmanager
    def session(self) -> Iterator[_Session]:
        """The session, held exclusively for the duration of the block."""
        with self._lock:
            yield self._connect()

    def find(self, slot: _Session, label: str, object_class: ObjectClass) -> Any:
        """The key ``label`` of ``object_class`` through ``slot`` (cached handle)."""
        cache_key = (label, int(object_class))
        found = slot.keys.get(cache_key)
        if found is not None:
            return found
        try:
            found = slot.handle.get_key(object_class=object_class, label=label)
        except p11e.NoSuchKey:
            raise Pkcs11KeyNotFoundError(f"no key labelled {label!r} in PKCS#11 token "
                                         f"{self.label!r}") from None
        except p11e.MultipleObjectsReturned:
            raise Pkcs11Error(f"more than one key is labelled {label!r} in token "
                              f"{self.label!r}", hint="give each key a unique label") from None
        except p11e.PKCS11Error as exc:
            raise translate(exc, f"cannot look up key {label!r}") from None
        slot.keys[cache_key] = found
        return found

    def use(self, label: str, object_class: ObjectClass, operation: Callable[[Any], T],
            what: str) -> T:
        """Run ``operation(key)`` on the key ``label`` in a borrowed session; PKCS#11
        failures become :class:`~iotsec.errors.Pkcs11Error` (``operation`` may raise its own
        errors first)."""
        with self.session() as slot:
            key = self.find(slot, label, object_class)
            try:
                return operation(key)
            except _MISSING_KEY:
                slot.keys.clear()  # destroyed or relabelled by someone else: look up again
                raise Pkcs11KeyNotFoundError(f"key {label!r} is no longer in token "
                                             f"{self.label!r}") from None
            except p11e.PKCS11Error as exc:
                raise translate(exc, f"cannot {what} with key {label!r}") from None

    def objects(self, attrs: dict[Attribute, Any]) -> list[Any]:
        with self.session() as slot:
            try:
                return list(slot.handle.get_objects(attrs))
            except p11e.PKCS11Error as exc:
                raise translate(exc, f"cannot list the keys of token {self.label!r}") from None

    def exists(self, label: str, object_class: ObjectClass | None = None) -> bool:
        attrs: dict[Attribute, Any] = {Attribute.LABEL: label}
        if object_class is not None:
            attrs[Attribute.CLASS] = object_class
        return bool(self.objects(attrs))

    def forget(self) -> None:
        """Drop cached key handles (after keys were relabelled or destroyed)."""
        with self._lock:
            if self._slot is not None:
                self._slot.keys.clear()

    def close(self) -> None:
        """Close the session (which ends the login if it was the last one)."""
        with self._lock:
            self._closed = True
            if self._slot is None:
                return
            with contextlib.suppress(p11e.PKCS11Error):
                self._slot.handle.close()
            self._slot = None


def _load_module(path: Path) -> Any:
    if not path.is_file():
        raise Pkcs11ModuleError(f"the PKCS#11 module {path} does not exist")
    try:
        return pkcs11.lib(str(path))
    except p11e.PKCS11Error as exc:
        # The loader's message says why (not an ELF file, missing symbol); it holds no secret.
        raise Pkcs11ModuleError(f"cannot load the PKCS#11 module {path}: {exc}") from None


def translate(exc: p11e.PKCS11Error, doing: str) -> KeyCustodyError:
    if isinstance(exc, p11e.UserNotLoggedIn | p11e.SessionHandleInvalid | p11e.SessionClosed
                  | p11e.DeviceRemoved | p11e.TokenNotPresent):
        return Pkcs11Error(f"{doing}: the token session ended ({type(exc).__name__})",
                           hint="restart the process; check that the token is present")
    if isinstance(exc, p11e.MechanismInvalid | p11e.FunctionNotSupported
                  | p11e.KeyTypeInconsistent):
        return KeyTypeMismatchError(f"{doing}: the token does not allow this operation "
                                    f"with this key ({type(exc).__name__})")
    return Pkcs11Error(f"{doing}: the token answered {type(exc).__name__}")


# --- signing keys (the KeyStore and Signer interfaces) ------------------------------------


class Pkcs11Signer:
    """A :class:`~iotsec.pki.keys.Signer` whose private key never leaves the token."""

    def __init__(self, token: Pkcs11Token, label: str, key_type: KeyType,
                 public_key: CertificateIssuerPublicKeyTypes,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self._token = token
        self.label = label
        self._type = key_type
        self._public = public_key
        self._on_use = on_use

    @property
    def key_type(self) -> KeyType:
        return self._type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        if self._type is KeyType.RSA_3072:
            signature = self._token.use(
                self.label, ObjectClass.PRIVATE_KEY,
                lambda key: bytes(key.sign(data, mechanism=Mechanism.SHA256_RSA_PKCS)), "sign")
        else:
            digest = (hashlib.sha384 if self._type is KeyType.ECDSA_P384
                      else hashlib.sha256)(data).digest()
            raw = self._token.use(self.label, ObjectClass.PRIVATE_KEY,
                                  lambda key: bytes(key.sign(digest, mechanism=Mechanism.ECDSA)),
                                  "sign")
            half = len(raw) // 2
            if len(raw) % 2 or half not in (32, 48):
                raise Pkcs11Error(f"the token returned a malformed ECDSA signature for "
                                  f"{self.label!r}")
            signature = encode_dss_signature(int.from_bytes(raw[:half], "big"),
                                             int.from_bytes(raw[half:], "big"))
        if self._on_use is not None:
            self._on_use(self.label, "sign")
        return signature

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.label!r}, {self._type.value}, token={self._token.label!r})"


PRIVATE_TEMPLATE: Final = {
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
    Attribute.UNWRAP: False, Attribute.DERIVE: False,
}


class Pkcs11KeyStore:
    """Signing keys in a token, by label (the :class:`~iotsec.custody.base.KeyStore`
    interface). ``on_use(label, operation)`` is called after each signature (for the audit
    trail)."""

    def __init__(self, token: Pkcs11Token,
                 on_use: Callable[[str, str], None] | None = None) -> None:
        self.token = token
        self.on_use = on_use
        self._cache: dict[str, Pkcs11Signer] = {}
        self._images: dict[str, CustodyImageSigner] = {}

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(token={self.token.label!r})"

    def exists(self, label: str) -> bool:
        return self.token.exists(check_label(label), ObjectClass.PRIVATE_KEY)

    def generate(self, label: str, key_type: KeyType) -> Signer:
        check_label(label)
        if self.token.exists(label):
            raise ConflictError(f"a key labelled {label!r} already exists in token "
                                f"{self.token.label!r}",
                                hint="keys are never overwritten; choose another label")
        key_id = secrets.token_bytes(16)
        public_template: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.VERIFY: True,
                                                 Attribute.ENCRYPT: False,
                                                 Attribute.WRAP: False}
        with self.token.session() as slot:
            try:
                if key_type is KeyType.RSA_3072:
                    slot.handle.generate_keypair(
                        P11KeyType.RSA, 3072, label=label, id=key_id, store=True,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                        public_template=public_template, private_template=PRIVATE_TEMPLATE)
                else:
                    params = _OID_P256 if key_type is KeyType.ECDSA_P256 else _OID_P384
                    slot.handle.generate_keypair(
                        P11KeyType.EC, label=label, id=key_id, store=True,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                        public_template={**public_template, Attribute.EC_PARAMS: params},
                        private_template=PRIVATE_TEMPLATE)
            except p11e.PKCS11Error as exc:
                raise translate(exc, f"cannot generate {key_type.value} key {label!r} in "
                                 f"token {self.token.label!r}") from None
        return self.load(label)

    def load(self, label: str) -> Pkcs11Signer:
        cached = self._cache.get(label)
        if cached is not None:
            return cached
        check_label(label)

        def describe(key: Any) -> tuple[KeyType, CertificateIssuerPublicKeyTypes]:
            key_type = _key_type_of(key)
            return key_type, _public_key(key, key_type)

        from iotsec.custody.pkcs11_image import is_image_key

        try:
            image_key = self.token.use(label, ObjectClass.PRIVATE_KEY, is_image_key, "find")
        except Pkcs11KeyNotFoundError:
            if self.token.exists(label, ObjectClass.SECRET_KEY):
                raise KeyTypeMismatchError(f"key {label!r} in token {self.token.label!r} is "
                                           "a secret (AES) key, not a signing key") from None
            raise
        if image_key:
            raise KeyTypeMismatchError(f"key {label!r} in token {self.token.label!r} is a "
                                       "firmware signing key, not a certificate-signing key",
                                       hint="use a CA key; firmware keys sign only images")
        key_type, public = self.token.use(label, ObjectClass.PUBLIC_KEY, describe, "read")
        signer = Pkcs11Signer(self.token, label, key_type, public, self.on_use)
        self._cache[label] = signer
        return signer

    def _notify(self, label: str, operation: str) -> None:
        if self.on_use is not None:
            self.on_use(label, operation)

    def generate_image_key(self, label: str, key_type: FirmwareKeyType) -> CustodyImageSigner:
        """A firmware signing key generated inside the token (non-extractable)."""
        from iotsec.custody import pkcs11_image

        pkcs11_image.generate(self.token, check_label(label), key_type)
        return self.load_image_key(label)

    def load_image_key(self, label: str) -> CustodyImageSigner:
        cached = self._images.get(label)
        if cached is not None:
            return cached
        from iotsec.custody import pkcs11_image

        signer = CustodyImageSigner(label, pkcs11_image.load(self.token, check_label(label)),
                                    self._notify)
        self._images[label] = signer
        return signer

    def public_pem(self, label: str) -> bytes:
        """The public key of ``label`` as SubjectPublicKeyInfo PEM."""
        return self.load(label).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def list(self) -> list[TokenKey]:
        """Private and secret keys in the token (public halves are not listed apart)."""
        from iotsec.custody.pkcs11_image import image_key_type, is_image_key

        found: list[TokenKey] = []
        for obj in self.token.objects({}):
            cls = obj.object_class
            if cls not in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
                continue
            label = str(obj.label)
            try:
                if cls == ObjectClass.SECRET_KEY:
                    key_type = f"{obj.key_type.name.lower()}-{obj.key_length}"
                    kind = ("retired-kek" if label.startswith(RETIRED_PREFIX)
                            else "kek" if obj.key_type == P11KeyType.AES else "other")
                elif is_image_key(obj):
                    key_type, kind = image_key_type(obj).value, "image-signing"
                else:
                    key_type, kind = _key_type_of(obj).value, "signing"
                extractable = bool(obj[Attribute.EXTRACTABLE])
                sensitive = bool(obj[Attribute.SENSITIVE])
            except (KeyCustodyError, p11e.PKCS11Error):
                key_type, kind, extractable, sensitive = "unsupported", "other", False, True
            found.append(TokenKey(label, kind, key_type, extractable, sensitive))
        return sorted(found, key=lambda k: (k.kind, k.label))


def connect(config: Pkcs11Config, *, lazy: bool = False) -> Pkcs11Token:
    """Log in to the token ``config`` names (with ``lazy``: on first use)."""
    return Pkcs11Token(config, lazy=lazy)


__all__ = ["HSM_KEK_PREFIX", "RETIRED_PREFIX", "Pkcs11Config", "Pkcs11KeyStore", "Pkcs11Signer",
           "Pkcs11Token", "TokenKey", "check_label", "connect", "translate"]
