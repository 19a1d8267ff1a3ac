"""The data-protection service on a real home (SQLite and PostgreSQL): the home's KEK,
atomic output, and the events each use of a key leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iotsec.app import protect as service
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, StreamChunkError


def test_files_round_trip_under_the_home_kek(rt: Runtime, tmp_path: Path) -> None:
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    src, enc, out = tmp_path / "a.bin", tmp_path / "a.enc", tmp_path / "a.out"
    src.write_bytes(os.urandom(100_000))
    info = service.encrypt_file(rt, str(src), str(enc), chunk_size=8192)
    assert info.kek_id == service.kek_store(rt).active().key_id
    assert service.inspect_file(str(enc)).kek_id == info.kek_id
    again = service.decrypt_file(rt, str(enc), str(out))
    assert out.read_bytes() == src.read_bytes() and again.chunks == info.chunks == 13
    kinds = [(e.kind, e.outcome) for e in list_events(rt.engine, limit=10)
             if e.kind.startswith("data.")]
    assert kinds == [("data.decrypt", "ok"), ("data.encrypt", "ok")]
    # A second file reuses the same KEK.
    assert service.encrypt_file(rt, str(src), str(tmp_path / "b.enc")).kek_id == info.kek_id


def test_refused_decryption_is_recorded_and_leaves_no_file(rt: Runtime, tmp_path: Path) -> None:
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    src, enc = tmp_path / "a.bin", tmp_path / "a.enc"
    src.write_bytes(os.urandom(30_000))
    service.encrypt_file(rt, str(src), str(enc), chunk_size=4096)
    blob = bytearray(enc.read_bytes())
    blob[-100] ^= 1
    enc.write_bytes(bytes(blob))
    with pytest.raises(StreamChunkError):
        service.decrypt_file(rt, str(enc), str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.enc"]
    refused = list_events(rt.engine, kind="data.decrypt", limit=1)[0]
    assert refused.outcome == "refused" and refused.detail == {"error": "stream-chunk"}
    with pytest.raises(ConflictError):
        service.encrypt_file(rt, str(src), str(enc))
