"""A PKCS#11 token session shared by iotsec's key stores: log in once, one session,
calls into the module serialised (python-pkcs11 initialises modules for single-threaded use),
so a server's threads can share it; PKCS#11 errors translated into iotsec's.

The PIN comes from the settings (the environment), is passed to ``C_Login`` and is never
logged nor put in an exception message.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from iotsec.errors import (
    KeyCustodyError,
    KeyTypeMismatchError,
    Pkcs11Error,
    Pkcs11KeyNotFoundError,
    Pkcs11ModuleError,
    Pkcs11PinError,
    Pkcs11TokenNotFoundError,
)

T = TypeVar("T")

#: KEK ids of keys held in a PKCS#11 token start with this.
HSM_KEK_PREFIX: Final = "hsm:"
#: Label prefix given to a retired KEK (it no longer answers to its id).
RETIRED_PREFIX: Final = "retired-"

OID_P256: Final = bytes.fromhex("06082a8648ce3d030107")
OID_P384: Final = bytes.fromhex("06052b81040022")
_MISSING_KEY: Final = (p11e.NoSuchKey, p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid)


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """Where the token is: the module's path, the token label and the user PIN."""

    module: Path
    token_label: str
    pin: str

    def __repr__(self) -> str:
        return (f"Pkcs11Config(module={str(self.module)!r}, "
                f"token_label={self.token_label!r}, pin=<hidden>)")


def ec_point(encoded: bytes) -> bytes:
    """The raw point from CKA_EC_POINT: a DER OCTET STRING (PKCS#11 2.40) or, from some
    tokens, the bare point."""
    if len(encoded) > 2 and encoded[0] == 0x04:
        if encoded[1] < 0x80 and encoded[1] == len(encoded) - 2:
            return encoded[2:]
        if encoded[1] == 0x81 and encoded[2] == len(encoded) - 3:
            return encoded[3:]
    return encoded


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


PRIVATE_TEMPLATE: Final = {
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
    Attribute.UNWRAP: False, Attribute.DERIVE: False,
}


def connect(config: Pkcs11Config, *, lazy: bool = False) -> Pkcs11Token:
    """Log in to the token ``config`` names (with ``lazy``: on first use)."""
    return Pkcs11Token(config, lazy=lazy)


__all__ = [
    "HSM_KEK_PREFIX", "PRIVATE_TEMPLATE", "RETIRED_PREFIX", "Pkcs11Config", "Pkcs11Token",
    "connect", "ec_point", "translate"
]
