"""``run_servers``: listeners set apart answer from an event loop of their own, so work that
holds one loop (a storm of TLS handshakes on the EST listener) never holds the other; one
listener that stops or fails stops them all."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from iotsec.api.listeners import run_servers

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class _Blocking:
    """An ASGI application answering ``/block`` only once ``release`` is set, while holding
    its event loop (as a TLS handshake does), and anything else at once with the name of
    its thread."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocking = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/block":
            self.blocking.set()
            self.release.wait(10)  # holds this loop on purpose
        body = threading.current_thread().name.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _Failing:
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            raise RuntimeError("this listener cannot start")


def _bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _config(app: Any, lifespan: str = "off") -> uvicorn.Config:
    config = uvicorn.Config(app, log_level="critical", lifespan=lifespan)
    config.load()
    return config


def _get(sock: socket.socket, path: str) -> str:
    port = sock.getsockname()[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[Callable[..., tuple[list[uvicorn.Config], list[socket.socket]]]]:
    threads: list[threading.Thread] = []
    ready = threading.Event()
    servers: list[Any] = []

    def start(apps: list[Any], apart: tuple[int, ...]
              ) -> tuple[list[uvicorn.Config], list[socket.socket]]:
        configs = [_config(app) for app in apps]
        sockets = [_bound() for _ in apps]
        original = uvicorn.Server.__init__

        def remember(self: uvicorn.Server, config: uvicorn.Config) -> None:
            original(self, config)
            servers.append(self)

        monkeypatch.setattr(uvicorn.Server, "__init__", remember)
        thread = threading.Thread(target=run_servers, args=(configs, sockets),
                                  kwargs={"started": ready.set, "apart": apart}, daemon=True)
        thread.start()
        threads.append(thread)
        assert ready.wait(10), "the listeners did not start"
        return configs, sockets

    yield start
    for server in servers:
        server.should_exit = True
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def test_a_listener_set_apart_answers_while_the_other_loop_is_held(serving: Any) -> None:
    api, est = _Blocking(), _Blocking()
    _, (api_sock, est_sock) = serving([api, est], apart=(1,))
    # Each listener answers from its own thread: the API's in the caller of run_servers,
    # the EST listener's in a thread of its own.
    assert _get(api_sock, "/") != _get(est_sock, "/")
    assert _get(est_sock, "/").startswith("iotsec-listener-")

    holder = threading.Thread(target=_get, args=(est_sock, "/block"), daemon=True)
    holder.start()
    assert est.blocking.wait(10)
    try:
        started = time.monotonic()
        assert _get(api_sock, "/")  # the API's loop is free while the EST loop is held
        assert time.monotonic() - started < 5
    finally:
        est.release.set()
        holder.join(10)


def test_listeners_in_one_loop_wait_for_each_other(serving: Any) -> None:
    # The counterpart, which shows the test above can fail: without ``apart``, a held loop
    # holds every listener on it.
    api, est = _Blocking(), _Blocking()
    _, (api_sock, est_sock) = serving([api, est], apart=())
    holder = threading.Thread(target=_get, args=(est_sock, "/block"), daemon=True)
    holder.start()
    assert est.blocking.wait(10)
    answered = threading.Event()
    threading.Thread(target=lambda: (_get(api_sock, "/"), answered.set()), daemon=True).start()
    assert not answered.wait(1.0)
    est.release.set()
    assert answered.wait(10)
    holder.join(10)


def test_a_listener_that_fails_stops_the_others() -> None:
    configs = [_config(_Blocking()), _config(_Failing(), lifespan="on")]
    sockets = [_bound(), _bound()]
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            run_servers(configs, sockets, apart=(1,))
        except BaseException as exc:
            raised.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    # uvicorn stops a server whose start fails (exit code 3); the API's listener stops with
    # it, and the failure reaches the caller, as it does when both share one loop.
    assert done.wait(15), "the other listener kept serving"
    assert len(raised) == 1 and isinstance(raised[0], SystemExit)
    assert raised[0].code == 3
