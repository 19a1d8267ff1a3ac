"""The home's key-encryption keys in one place: file KEKs and, when a PKCS#11 token is
configured, KEKs inside the token, behind one ``active`` pointer.

:class:`KekCustody` is a :class:`~iotsec.protect.kek.KekResolver`: an id ``hsm:<label>``
goes to the token, any other id to the KEK files. The ``active`` file of the KEK directory
(the one :class:`~iotsec.custody.file_keks.FileKekStore` reads) names the KEK new data is wrapped
under, whichever custody holds it. Retiring a file KEK moves its (still encrypted) file to
``retired/``; retiring a token KEK relabels it. Either way it stops unwrapping, yet can be
reinstated if something forgotten still depends on it; ``destroy`` deletes it for good.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from iotsec.custody.file_keks import FileKekStore
from iotsec.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RetiredKekError,
    UnknownKekError,
)
from iotsec.protect.kek import KeyWrapper, check_kek_id

__all__ = ["HSM_PREFIX", "RETIRED_DIR", "Backend", "KekCustody", "KekInfo", "backend_of"]

if TYPE_CHECKING:
    from iotsec.custody.pkcs11_kek import Pkcs11KekStore

HSM_PREFIX: Final = "hsm:"
RETIRED_DIR: Final = "retired"
Backend = Literal["file", "pkcs11"]


class KekInfo(NamedTuple):
    """A KEK the custody knows: where it is held and whether it is active or retired."""

    key_id: str
    backend: Backend
    active: bool
    retired: bool


def backend_of(key_id: str) -> Backend:
    return "pkcs11" if key_id.startswith(HSM_PREFIX) else "file"


class KekCustody:
    """File KEKs in ``directory`` (unlocked with ``passphrase``) and, optionally, token KEKs
    (``hsm`` is called once, on first need, so a home without a token never connects)."""

    def __init__(self, directory: Path, passphrase: bytes,
                 hsm: Callable[[], Pkcs11KekStore] | None = None,
                 default_backend: Backend = "file") -> None:
        self.directory = directory
        self._passphrase = passphrase
        self.files = FileKekStore(directory, passphrase)
        self._hsm_factory = hsm
        self._hsm: Pkcs11KekStore | None = None
        self.default_backend: Backend = default_backend

    def __repr__(self) -> str:
        return f"KekCustody({str(self.directory)!r}, token={self._hsm_factory is not None})"

    @property
    def retired_dir(self) -> Path:
        return self.directory / RETIRED_DIR

    @property
    def has_token(self) -> bool:
        return self._hsm_factory is not None

    def hsm(self) -> Pkcs11KekStore:
        if self._hsm is None:
            if self._hsm_factory is None:
                raise UnknownKekError(
                    "no PKCS#11 token is configured for key-encryption keys",
                    hint="set IOTSEC_PKCS11_MODULE, IOTSEC_PKCS11_TOKEN and IOTSEC_PKCS11_PIN")
            self._hsm = self._hsm_factory()
        return self._hsm

    # --- the resolver ---------------------------------------------------------------------

    def kek(self, key_id: str) -> KeyWrapper:
        """The KEK ``key_id`` (a :class:`~iotsec.errors.RetiredKekError` if it was retired,
        :class:`~iotsec.errors.UnknownKekError` if it is not in custody at all)."""
        if backend_of(key_id) == "pkcs11":
            return self.hsm().kek(key_id)
        try:
            return self.files.kek(key_id)
        except UnknownKekError:
            if (self.retired_dir / f"{check_kek_id(key_id)}.kek").exists():
                raise RetiredKekError(f"key-encryption key {key_id!r} was retired") from None
            raise

    def active_id(self) -> str | None:
        return self.files.active_id()

    def active(self) -> KeyWrapper:
        """The KEK new data is wrapped under."""
        return self.kek(self.files.required_active_id())

    def active_or_create(self) -> KeyWrapper:
        """The active KEK, creating and activating a first one (in the default backend)."""
        if self.active_id() is None:
            kek = self.generate(self.default_backend)
            if self.files.publish_active(kek.key_id):
                return kek
            # Another process activated its own first: use that one.
        return self.active()

    # --- lifecycle --------------------------------------------------------------------------

    def generate(self, backend: Backend | None = None) -> KeyWrapper:
        """A new KEK in ``backend`` (default: the custody's default); not yet active."""
        chosen = backend or self.default_backend
        if chosen == "pkcs11":
            return self.hsm().generate()
        if chosen != "file":
            raise InvalidInputError(f"unknown key-encryption key backend {chosen!r}",
                                    hint="choose 'file' or 'pkcs11'")
        return self.files.generate()

    def activate(self, key_id: str) -> None:
        """Make ``key_id`` the KEK for new data (it must be in custody and usable)."""
        self.kek(key_id)
        self.files.write_active(key_id)

    def describe(self) -> list[KekInfo]:
        """Every KEK in custody, usable and retired (the token's only if one is configured)."""
        active = self.active_id()
        found = [KekInfo(i, "file", i == active, False) for i in self.files.ids()]
        if self.retired_dir.is_dir():
            found += [KekInfo(p.name[:-4], "file", False, True)
                      for p in sorted(self.retired_dir.glob("*.kek"))]
        if self.has_token:
            store = self.hsm()
            found += [KekInfo(i, "pkcs11", i == active, False) for i in store.ids()]
            found += [KekInfo(i, "pkcs11", False, True) for i in store.retired_ids()]
        return found

    def retire(self, key_id: str, *, destroy: bool = False) -> None:
        """Stop ``key_id`` unwrapping anything. The active KEK cannot be retired."""
        if key_id == self.active_id():
            raise ConflictError(f"key-encryption key {key_id!r} is active",
                                hint="rotate first: 'iotsec keys rotate kek'")
        if backend_of(key_id) == "pkcs11":
            self.hsm().retire(key_id, destroy=destroy)
            return
        path = self.directory / f"{check_kek_id(key_id)}.kek"
        retired = self.retired_dir / path.name
        if destroy:
            existed = False
            for candidate in (path, retired):
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                    existed = True
            if not existed:
                raise UnknownKekError(f"key-encryption key {key_id!r} is not in custody")
        else:
            if not path.exists():
                if retired.exists():
                    return  # already retired: nothing to do (rotations are re-runnable)
                raise UnknownKekError(f"key-encryption key {key_id!r} is not in custody")
            self.retired_dir.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, retired)
        self._forget()

    def reinstate(self, key_id: str) -> None:
        """Make a retired KEK usable again (for data that still depends on it)."""
        if backend_of(key_id) == "pkcs11":
            self.hsm().reinstate(key_id)
            return
        retired = self.retired_dir / f"{check_kek_id(key_id)}.kek"
        if not retired.exists():
            raise NotFoundError(f"no retired key-encryption key {key_id!r}",
                                hint="see 'iotsec keys list'")
        target = self.directory / retired.name
        try:
            os.link(retired, target)
        except FileExistsError:
            raise ConflictError(f"key-encryption key {key_id!r} is already in use") from None
        retired.unlink()

    def _forget(self) -> None:
        # The file store caches unlocked KEKs; start afresh so a retired one is gone here too.
        self.files = FileKekStore(self.directory, self._passphrase)

