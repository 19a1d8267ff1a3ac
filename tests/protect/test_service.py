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
    assert info.kek_id == rt.custody.keks().active().key_id
    assert service.inspect_file(str(enc)).kek_id == info.kek_id
    again = service.decrypt_file(rt, str(enc), str(out))
    assert out.read_bytes() == src.read_bytes() and again.chunks == info.chunks == 13
    kinds = [(e.kind, e.outcome) for e in list_events(rt.engine, limit=10)
             if e.kind.startswith("data.")]
    assert kinds == [("data.decrypt", "ok"), ("data.encrypt", "ok")]
    # The data key's unwrap is a use of the KEK, on the audit trail.
    (use,) = list_events(rt.engine, kind="key.use", limit=10)
    assert use.subject == info.kek_id
    assert use.detail == {"operation": "unwrap", "backend": "file"}
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


def test_opening_a_device_secret_is_a_recorded_key_use(rt: Runtime) -> None:
    from iotsec.app.identity import device_tokens
    from iotsec.app.identity.devices import NewDevice, add_device

    add_device(rt, NewDevice(id="legacy-1"))
    kid, secret = device_tokens.create_secret(rt, "legacy-1")
    before = len(list_events(rt.engine, kind="key.use", limit=100))
    from iotsec.app.custody.keys import open_device_secret
    from iotsec.store import models as m
    from iotsec.store.db import reading

    with reading(rt.engine) as conn:
        stored = conn.execute(m.device_secrets.select()).one().ciphertext
    assert open_device_secret(rt, kid, "legacy-1", bytes(stored)) == secret.encode()
    uses = list_events(rt.engine, kind="key.use", limit=100)
    assert len(uses) == before + 1
    assert uses[0].detail is not None and uses[0].detail["operation"] == "unwrap"
