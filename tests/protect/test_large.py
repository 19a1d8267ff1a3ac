"""Files of any size with bounded memory: 50 MB streamed in process (memory traced) and
through real pipes into the command-line program (its peak RSS measured)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.protect.atrest import decrypt_stream, encrypt_stream
from iotsec.protect.kek import FileKek

SIZE = 50 * 1024 * 1024
BLOCK = 1 << 20


class Pattern(io.RawIOBase):
    """``SIZE`` pseudo-random bytes, generated as they are read (never held whole)."""

    def __init__(self, size: int = SIZE) -> None:
        self.left = size
        self.digest = hashlib.sha256()
        self._counter = 0
        self._buffer = bytearray()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        while len(self._buffer) < size:
            self._counter += 1
            self._buffer += hashlib.sha512(self._counter.to_bytes(8, "big")).digest() * 16
        piece = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.left -= size
        self.digest.update(piece)
        return piece


class Hasher(io.RawIOBase):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def test_50_mb_in_process_with_bounded_memory(tmp_path: Path) -> None:
    kek = FileKek("kek-large", os.urandom(32))
    enc = tmp_path / "big.enc"
    source = Pattern()
    tracemalloc.start()
    try:
        with enc.open("wb") as dst:
            info = encrypt_stream(source, dst, kek)  # type: ignore[arg-type]
        _, peak_encrypt = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sink = Hasher()
        with enc.open("rb") as src:
            decrypt_stream(src, sink, kek)  # type: ignore[arg-type]
        _, peak_decrypt = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.plaintext_bytes == SIZE and info.chunks == SIZE // 65536
    assert sink.size == SIZE and sink.digest.digest() == source.digest.digest()
    # Two 64 KiB chunks and their ciphertexts, plus small change: far below the 50 MB.
    assert peak_encrypt < 1 * 1024 * 1024, peak_encrypt
    assert peak_decrypt < 1 * 1024 * 1024, peak_decrypt
    # A file (a buffered stream) is sealed in blocks of whole chunks: three blocks of
    # 256 KiB, reused, whatever the size.
    tracemalloc.start()
    try:
        with enc.open("rb") as src, (tmp_path / "again.enc").open("wb") as dst:
            again = encrypt_stream(src, dst, kek)
        _, peak_blocks = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert again.plaintext_bytes == enc.stat().st_size
    assert peak_blocks < 1 * 1024 * 1024, peak_blocks


def _run_cli(args: list[str], env: dict[str, str], feed: int | None) -> tuple[int, int, bytes]:
    """Run ``iotsec data ARGS`` in a child; optionally write ``feed`` bytes of Pattern into
    its stdin through a pipe. Returns (exit code, peak RSS in KiB, stderr)."""
    code = ("import sys; from iotsec.cli import main as m; from iotsec.cli.data import "
            "data_app; import typer; root = typer.Typer(); root.add_typer(data_app, "
            "name='data'); root.callback()(lambda: None); m.app = root; "
            "sys.exit(m.main(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-c", code, "data", *args], env=env,
                             stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    if feed is not None:
        assert child.stdin is not None
        source = Pattern(feed)
        while piece := source.read(BLOCK):
            child.stdin.write(piece)
        child.stdin.close()
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss, err


def test_50_mb_through_pipes_into_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_home(Settings(home=home), store_passphrase=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env["IOTSEC_HOME"] = str(home)
    # Baseline: the same program on a tiny input (interpreter and imports).
    code, small_rss, err = _run_cli(["encrypt", "-", str(tmp_path / "small.enc")], env, 10)
    assert code == 0, err
    code, big_rss, err = _run_cli(["encrypt", "-", str(tmp_path / "big.enc")], env, SIZE)
    assert code == 0, err
    assert (tmp_path / "big.enc").stat().st_size > SIZE
    code, dec_rss, err = _run_cli(["decrypt", str(tmp_path / "big.enc"),
                                   str(tmp_path / "big.out")], env, None)
    assert code == 0, err
    digest = hashlib.sha256()
    with (tmp_path / "big.out").open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    expected = Pattern()
    while expected.read(BLOCK):
        pass
    assert digest.digest() == expected.digest.digest()
    # Streaming: 50 MB through the program costs a few MiB over its baseline, not 50.
    assert big_rss - small_rss < 16 * 1024, (small_rss, big_rss)
    assert dec_rss - small_rss < 16 * 1024, (small_rss, dec_rss)
