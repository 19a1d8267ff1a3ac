"""Builders and servers shared by the OTA tests.

``FileServer`` is a real HTTP server (``http.server`` in a thread, on 127.0.0.1 and a free
port) over a copy of the repository directory that a test may tamper with, the way an
attacker who controls the update server or a mirror would. ``ApiServer`` runs the iotsec
API itself under uvicorn in a thread.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer._crypto_signer import CryptoSigner

from iotsec.app.ota.repo import KeyFile
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.image_keys import ImageSigner
from iotsec.firmware.sign import SignOptions, sign_image
from tests.ports import free_port


def tuf_key() -> KeyFile:
    signer = CryptoSigner(ed25519.Ed25519PrivateKey.generate())
    return KeyFile(signer.public_key, signer)


def public_only(key: KeyFile) -> KeyFile:
    return KeyFile(key.public)


def image(signer: ImageSigner, version: str, counter: int | None = None, *,
          size: int = 4096, fill: bytes = b"\x5a") -> bytes:
    """A signed MCUboot image of ``size`` body bytes."""
    options = SignOptions(version=ImageVersion.parse(version), header_size=0x200,
                          pad_header=True, security_counter=counter)
    return sign_image(fill * size, signer, options)


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        endless = self.server.endless
        if endless is not None and self.path.endswith(endless):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            # An attacker's endless stream, bounded here so the test cannot hang.
            chunk = b"{" * 65536
            with contextlib.suppress(OSError):
                for _ in range(1024):
                    self.wfile.write(chunk)
            return
        super().do_GET()


class _Server(http.server.ThreadingHTTPServer):
    requests: list[str]
    endless: str | None


class FileServer:
    """Serve a copy of ``source`` (the repository's ``tuf`` directory) over HTTP."""

    def __init__(self, source: Path, root: Path) -> None:
        self.root = root
        shutil.copytree(source, root, dirs_exist_ok=True)

        def handler(*args: Any, **kwargs: Any) -> _Handler:
            return _Handler(*args, directory=str(root), **kwargs)

        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.requests = []
        self._server.endless = None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metadata/"

    @property
    def targets_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/targets/"

    @property
    def requests(self) -> list[str]:
        return self._server.requests

    def serve_endless(self, suffix: str | None) -> None:
        self._server.endless = suffix

    def sync(self, source: Path) -> None:
        """Mirror the repository again (what an honest server does after a publish)."""
        shutil.copytree(source, self.root, dirs_exist_ok=True)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class ApiServer:
    """The iotsec API under uvicorn on 127.0.0.1, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextlib.contextmanager
def serving(source: Path, root: Path) -> Iterator[FileServer]:
    server = FileServer(source, root)
    try:
        yield server
    finally:
        server.close()
