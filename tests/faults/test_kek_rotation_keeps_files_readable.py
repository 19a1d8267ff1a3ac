"""A KEK rotation used to retire a key that still protected files made by
``iotsec data encrypt`` (the report counted only database records), and those files then
failed to decrypt. Now each file encryption is recorded: the old KEK is kept (and the
report says why) until ``iotsec data rewrap`` moved the files, or ``--force`` is given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iotsec.app import protect
from iotsec.app.custody import kek_rotation as rotation
from iotsec.app.runtime import Runtime
from iotsec.errors import KekRotationError, RetiredKekError, StreamChunkError
from iotsec.protect.atrest import StreamHeader
from tests.cli.support import Cli, use_home

DATA = os.urandom(5 * 4096 + 17)


def _encrypt(rt: Runtime, tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    plain = tmp_path / name / f"{name}.txt"
    plain.write_bytes(DATA)
    sealed = tmp_path / name / f"{name}.enc"
    protect.encrypt_file(rt, str(plain), str(sealed), chunk_size=4096)
    return sealed


def _decrypts(rt: Runtime, sealed: Path, out: Path) -> None:
    out.unlink(missing_ok=True)
    protect.decrypt_file(rt, str(sealed), str(out))
    assert out.read_bytes() == DATA


def test_rotation_keeps_a_kek_files_depend_on_until_they_are_rewrapped(
        rt: Runtime, tmp_path: Path) -> None:
    sealed = _encrypt(rt, tmp_path, "a")
    old = rt.custody.keks().active_id()
    assert old is not None
    assert {k.key_id: k.files for k in rotation.key_report(rt).keks} == {old: 1}

    first = rotation.rotate_kek(rt)
    assert not first.complete and first.retired == [] and first.files == {old: 1}
    report = {k.key_id: k for k in rotation.key_report(rt).keks}
    assert report[old].state == "available" and report[old].files == 1
    assert report[first.target].state == "active"
    assert rotation.key_report(rt).rotation is not None  # resumed by the next run
    with pytest.raises(KekRotationError) as refused:
        rotation.retire_kek(rt, old)
    assert "data rewrap" in (refused.value.hint or "") and str(sealed) in str(refused.value)
    _decrypts(rt, sealed, tmp_path / "a.out")

    before = sealed.stat()
    moved = protect.rewrap_file(rt, str(sealed))
    assert (moved.old_kek, moved.new_kek) == (old, first.target)
    assert StreamHeader.read(sealed.open("rb")).kek_id == first.target
    assert sealed.stat().st_mode == before.st_mode
    assert protect.rewrap_file(rt, str(sealed)).old_kek == first.target  # nothing to do

    second = rotation.rotate_kek(rt)
    assert second.resumed and second.target == first.target and second.complete
    assert second.retired == [old]
    report = {k.key_id: k for k in rotation.key_report(rt).keks}
    assert report[old].state == "retired" and report[old].files == 0
    assert report[first.target].files == 1
    _decrypts(rt, sealed, tmp_path / "a.out")


def test_force_retires_anyway_and_such_files_no_longer_open(rt: Runtime,
                                                           tmp_path: Path) -> None:
    sealed = _encrypt(rt, tmp_path, "b")
    old = rt.custody.keks().active_id()
    result = rotation.rotate_kek(rt, force=True)
    assert result.complete and result.retired == [old]
    with pytest.raises(RetiredKekError):
        protect.decrypt_file(rt, str(sealed), str(tmp_path / "b.out"))
    # The file is still recorded under the retired key, which holds no later rotation back.
    assert {k.key_id: k.files for k in rotation.key_report(rt).keks}[old] == 1
    assert rotation.rotate_kek(rt).complete


def test_a_rewrap_that_does_not_verify_leaves_the_file_alone(rt: Runtime,
                                                             tmp_path: Path) -> None:
    sealed = _encrypt(rt, tmp_path, "c")
    rotation.rotate_kek(rt)
    data = bytearray(sealed.read_bytes())
    data[-5] ^= 1  # the last chunk is damaged
    sealed.write_bytes(bytes(data))
    with pytest.raises(StreamChunkError):
        protect.rewrap_file(rt, str(sealed))
    assert sealed.read_bytes() == bytes(data)
    assert sorted(p.name for p in sealed.parent.iterdir()) == ["c.enc", "c.txt"]


def test_the_commands(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                      tmp_path: Path) -> None:
    use_home(monkeypatch, tmp_path / "home")
    cli = Cli(capsys)
    (tmp_path / "plain").write_bytes(DATA)
    cli.ok("data", "encrypt", str(tmp_path / "plain"), str(tmp_path / "sealed"))
    refused = cli("keys", "rotate", "kek")
    assert refused.code == 1 and "data rewrap" in refused.err
    report = cli.json("keys", "report")
    assert sorted(k["files"] for k in report["keks"]) == [0, 1]
    (moved,) = cli.json("data", "rewrap", str(tmp_path / "sealed"))
    assert moved["changed"] is True
    done = cli.json("keys", "rotate", "kek")
    assert done["complete"] is True and done["retired"] == [moved["old_kek"]]
    cli.ok("data", "decrypt", str(tmp_path / "sealed"), str(tmp_path / "again"))
    assert (tmp_path / "again").read_bytes() == DATA
