"""A real ``iotsec serve`` process for the connection, TLS and enrolment tests, and slow
clients."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from iotsec.api import listeners
from tests.cli.support import CONSOLE_SCRIPT, run_script
from tests.ports import free_port


def wait_healthy(client: httpx.Client, server: subprocess.Popen[bytes], log: Path,
                 within: float = 60) -> None:
    """Until the served process answers ``/healthz`` (its log shown if it dies or stalls)."""
    deadline = time.monotonic() + within
    while True:
        assert server.poll() is None, log.read_text()
        try:
            client.get("/healthz")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def wait_listening(port: int, server: subprocess.Popen[bytes], log: Path,
                   within: float = 60) -> None:
    """Until ``port`` on loopback accepts connections (the server's log shown if it dies
    or stalls)."""
    deadline = time.monotonic() + within
    while True:
        assert server.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


@contextmanager
def in_thread(config: uvicorn.Config, sockets: list[socket.socket] | None = None
              ) -> Iterator[uvicorn.Server]:
    """A uvicorn server running ``config`` in a thread of this process (on ``sockets``,
    bound already, when given), stopped at the end."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, args=(sockets,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def recorded_servers(
        monkeypatch: pytest.MonkeyPatch,
        run: Callable[[Sequence[uvicorn.Config], Sequence[socket.socket]], None] | None = None,
) -> list[list[uvicorn.Config]]:
    """``iotsec serve`` run in this process records the uvicorn configurations of its
    listeners (loaded: applications and TLS contexts built; API listener first) instead of
    serving them, or hands them and their claimed sockets to ``run``."""
    calls: list[list[uvicorn.Config]] = []

    def record(configs: Sequence[uvicorn.Config], sockets: Sequence[socket.socket],
               **_: object) -> None:
        calls.append(list(configs))
        if run is not None:
            run(configs, sockets)

    monkeypatch.setattr(listeners, "run_servers", record)
    return calls


@dataclass(frozen=True)
class Home:
    """An initialised home: the environment that selects it, its admin token, and the CA
    chain (``iotsec ca chain``) that clients trust."""

    path: Path
    env: dict[str, str]
    token: str
    chain: Path


def init_home(tmp_path: Path, env: Mapping[str, str] | None = None, *,
              prefix: Sequence[str] = ()) -> Home:
    """``iotsec init`` of ``tmp_path/home`` (run under ``prefix``, e.g. ``faketime -f
    -3d``, when given), with no IOTSEC_ setting inherited but ``env``; its chain in
    ``tmp_path/chain.pem``."""
    home = tmp_path / "home"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    environment.update(env or {})
    environment["IOTSEC_HOME"] = str(home)
    init = subprocess.run([*prefix, str(CONSOLE_SCRIPT), "init", "--store-passphrase", "--json"],
                          env=environment,
                          capture_output=True, text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stderr
    chain = tmp_path / "chain.pem"
    done = run_script("ca", "chain", env=environment)
    assert done.returncode == 0, done.stderr
    chain.write_text(done.stdout)
    return Home(home, environment, json.loads(init.stdout)["admin_token"], chain)


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc): a server's workers."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@dataclass(frozen=True)
class Served:
    """A running ``iotsec serve``: where it listens (the API's port, the EST listener's
    when it has one), its pid, its home, and how to trust it."""

    port: int
    pid: int
    token: str
    chain: Path
    tls: bool
    log: Path
    home: Path
    env: dict[str, str]
    est_port: int | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url

    @property
    def est_url(self) -> str:
        """The EST listener's origin (always HTTPS); its operations are under
        ``/.well-known/est/``."""
        assert self.est_port is not None, "served without the EST listener"
        return f"https://127.0.0.1:{self.est_port}"

    def iotsec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``iotsec ARGS`` (the installed command) on this server's home."""
        return run_script(*args, env=self.env, timeout=timeout)

    def trust(self) -> ssl.SSLContext:
        """A client context that trusts iotsec's CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.chain))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self.trust(), timeout=10)

    def connect(self, *, handshake: bool = False, send: bytes = b"") -> socket.socket:
        """A connection (see :func:`connect`), with a TLS handshake done when asked."""
        return connect(self.port, tls=self.trust() if handshake else None, send=send)

    def open_files(self) -> int:
        """How many descriptors the server process holds now."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextmanager
def served(tmp_path: Path, *options: str, tls: bool = True, est: bool = False,
           env: Mapping[str, str] | None = None, home: Home | None = None
           ) -> Iterator[Served]:
    """``iotsec serve --port P [--http] OPTIONS`` over a fresh home (or ``home``), with
    ``env`` added to its environment, ready to answer; stopped by its pid afterwards. The
    EST listener is off unless ``est`` (then on a free port of its own)."""
    home = home or init_home(tmp_path, env)
    environment = {**home.env, **(env or {})}
    port = free_port()
    est_port = None
    while est and est_port in (None, port):
        est_port = free_port()
    log = tmp_path / "serve.log"
    args = [str(CONSOLE_SCRIPT), "serve", "--port", str(port),
            "--est-port", str(est_port or 0), *options]
    with log.open("wb") as out:
        server = subprocess.Popen([*args, *(() if tls else ("--http",))], env=environment,
                                  stdout=out, stderr=subprocess.STDOUT)
    running = Served(port, server.pid, home.token, home.chain, tls, log, home.path,
                     environment, est_port)
    try:
        with running.client() as client:
            wait_healthy(client, server, log)
        if est_port is not None:
            wait_listening(est_port, server, log)
        yield running
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def connect(port: int, *, tls: ssl.SSLContext | None = None, send: bytes = b"") -> socket.socket:
    """A TCP connection to ``port`` on loopback (over TLS with ``tls``, handshake done) that
    has sent ``send``; non-blocking from then on, for :func:`is_closed`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    if send:
        sock.sendall(send)
    sock.setblocking(False)
    return sock


def is_closed(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (readable, and nothing or an error to read)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
        return False
    try:
        return sock.recv(1024) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:  # reset, or a TLS record cut short: closed all the same
        return True


def wait_closed(socks: Sequence[socket.socket], within: float,
                trickle: Sequence[socket.socket] = ()) -> float:
    """Seconds until every socket in ``socks`` is closed by the server, at most ``within``
    (then an assertion fails). Meanwhile each socket of ``trickle`` sends one more byte of
    its request headers every 0.2 s, as a slow client does to keep a connection open."""
    start = time.monotonic()
    open_ = list(socks)
    while open_:
        elapsed = time.monotonic() - start
        assert elapsed < within, f"{len(open_)} of {len(socks)} connections still open " \
                                 f"after {within} s"
        for sock in [s for s in open_ if s in trickle]:
            # A send fails when the server has closed it (the read below sees that).
            with contextlib.suppress(OSError):
                sock.send(b"X")
        select.select(open_, [], [], 0.2)
        open_ = [s for s in open_ if not is_closed(s)]
    return time.monotonic() - start
