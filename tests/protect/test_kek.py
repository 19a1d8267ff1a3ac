"""Key-encryption keys: the wrapping interface, file KEKs protected by the CA passphrase."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from iotsec.custody.file_keks import ACTIVE_FILE, FileKekStore
from iotsec.errors import (
    DataKeyUnwrapError,
    KekUnlockError,
    KeyCustodyError,
    NotFoundError,
    UnknownKekError,
)
from iotsec.protect.kek import (
    FileKek,
    KekRing,
    KeyWrapper,
    resolve_kek,
)

PASS = b"correct horse battery staple"


def test_file_kek_wraps_with_bound_associated_data() -> None:
    key = os.urandom(32)
    kek = FileKek("kek-test", key)
    assert isinstance(kek, KeyWrapper)
    dek = os.urandom(32)
    wrapped = kek.wrap(dek, b"table|1|field")
    assert dek not in wrapped and len(wrapped) == 1 + 12 + 32 + 16
    assert kek.unwrap(wrapped, b"table|1|field") == dek
    with pytest.raises(DataKeyUnwrapError):
        kek.unwrap(wrapped, b"table|2|field")
    with pytest.raises(DataKeyUnwrapError):
        kek.unwrap(wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"table|1|field")
    with pytest.raises(DataKeyUnwrapError, match="malformed"):
        kek.unwrap(b"\x02" + wrapped[1:], b"table|1|field")
    # Another KEK (even one claiming the same id) cannot unwrap it.
    with pytest.raises(DataKeyUnwrapError):
        FileKek("kek-test", os.urandom(32)).unwrap(wrapped, b"table|1|field")
    # The same key bytes under another id do not either: the id is bound into the wrapping.
    with pytest.raises(DataKeyUnwrapError):
        FileKek("kek-other", key).unwrap(wrapped, b"table|1|field")
    assert "hidden" in repr(kek)
    with pytest.raises(KeyCustodyError):
        kek.wrap(b"short", b"")
    with pytest.raises(KeyCustodyError):
        FileKek("bad id!", os.urandom(32))


def test_store_creates_one_private_active_kek_and_reloads_it(tmp_path: Path) -> None:
    store = FileKekStore(tmp_path / "kek", PASS)
    with pytest.raises(NotFoundError):
        store.active()
    kek = store.active_or_create()
    assert store.active_or_create() is kek
    assert store.ids() == [kek.key_id]
    path = tmp_path / "kek" / f"{kek.key_id}.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kek" / ACTIVE_FILE).stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["kdf"] == "scrypt" and doc["id"] == kek.key_id and "kek" in doc
    wrapped = kek.wrap(b"k" * 32, b"ctx")
    # A new process (a new store) unlocks the same KEK from the file.
    again = FileKekStore(tmp_path / "kek", PASS)
    assert again.active().unwrap(wrapped, b"ctx") == b"k" * 32
    assert resolve_kek(again, kek.key_id).key_id == kek.key_id
    assert not [p for p in (tmp_path / "kek").iterdir() if p.name.startswith(".")]


def test_wrong_passphrase_is_its_own_error(tmp_path: Path) -> None:
    kek = FileKekStore(tmp_path, PASS).active_or_create()
    with pytest.raises(KekUnlockError, match="wrong passphrase"):
        FileKekStore(tmp_path, b"not the right passphrase").kek(kek.key_id)
    with pytest.raises(KeyCustodyError, match="too short"):
        FileKekStore(tmp_path, b"short")


def test_altered_or_exposed_kek_files_are_refused(tmp_path: Path) -> None:
    store = FileKekStore(tmp_path, PASS)
    kek = store.generate()
    path = tmp_path / f"{kek.key_id}.kek"
    doc = json.loads(path.read_text())

    def reload(changed: dict[str, object]) -> None:
        path.chmod(0o600)
        path.write_text(json.dumps({**doc, **changed}))
        FileKekStore(tmp_path, PASS).kek(kek.key_id)

    for changed in ({"v": 2}, {"n": 2**21}, {"n": 3}, {"salt": "!!"}, {"id": "kek-other"},
                    {"kek": doc["kek"][:-4] + "AAAA"}):
        with pytest.raises(KekUnlockError):
            reload(changed)
    path.write_text("not json")
    with pytest.raises(KekUnlockError):
        FileKekStore(tmp_path, PASS).kek(kek.key_id)
    path.write_text(json.dumps(doc))
    path.chmod(0o644)
    with pytest.raises(KeyCustodyError, match="readable by other users"):
        FileKekStore(tmp_path, PASS).kek(kek.key_id)
    path.chmod(0o600)
    path.write_bytes(b"x" * 5000)
    with pytest.raises(KekUnlockError, match="larger"):
        FileKekStore(tmp_path, PASS).kek(kek.key_id)


def test_unknown_kek_and_activation(tmp_path: Path) -> None:
    store = FileKekStore(tmp_path, PASS)
    first = store.active_or_create()
    second = store.generate()
    assert store.active().key_id == first.key_id
    store.activate(second.key_id)
    assert FileKekStore(tmp_path, PASS).active().key_id == second.key_id
    assert sorted(store.ids()) == sorted([first.key_id, second.key_id])
    with pytest.raises(UnknownKekError):
        store.kek("kek-0000000000000000")
    with pytest.raises(UnknownKekError):
        store.activate("kek-0000000000000000")
    with pytest.raises(KeyCustodyError):
        store.kek("../escape")
    (tmp_path / ACTIVE_FILE).write_text("../x\n")
    with pytest.raises(KeyCustodyError, match="does not name"):
        store.active()


def test_ring_resolves_by_id() -> None:
    a, b = FileKek("kek-a", os.urandom(32)), FileKek("kek-b", os.urandom(32))
    ring = KekRing(a, [b])
    assert ring.active is a and ring.kek("kek-b") is b and ring.ids() == ["kek-a", "kek-b"]
    with pytest.raises(UnknownKekError):
        ring.kek("kek-c")
    assert resolve_kek(a, "kek-a") is a
    with pytest.raises(UnknownKekError):
        resolve_kek(a, "kek-b")
