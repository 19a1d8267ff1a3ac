"""The listeners of ``iotsec serve``: the API's, the EST listener and the public plain-HTTP
listener (OCSP, CRLs, CA certificates), uvicorn servers in one process, the EST listener in
an event loop of its own; with ``--workers N``, N processes that each serve all of them, on
the sockets the supervising process bound.

uvicorn runs one server per process, and its worker supervisor gives every worker one
configuration: one application, one TLS context, one protocol. The EST listener needs its
own of each (it requests a client certificate, which the API listener never does), so:

- :func:`run_servers` serves several uvicorn configurations, each on a socket bound
  beforehand (the claimed port: it is never free between the claim and the serving), in
  one event loop but for those set apart in loops of their own. SIGINT or SIGTERM stops
  them all, a second SIGINT without waiting for open connections; a server that stops by
  itself stops the others.
- :class:`ServePlan` is what a serving process serves: the uvicorn options of each
  listener. It is a picklable value, the target of each worker process, which opens its
  own runtime from the environment.
- :func:`supervise` runs the worker processes (spawned, like uvicorn's), replaces one that
  dies, and stops them all on SIGINT or SIGTERM, or when one dies before it served (the next
  would fail the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from types import FrameType
from typing import Any

import uvicorn

from iotsec.api.app import create_app
from iotsec.api.est import create_est_app
from iotsec.api.est_tls import est_context
from iotsec.api.live_tls import watch_serving
from iotsec.api.public_http import PublicApp
from iotsec.app.access.decisions import warm_up
from iotsec.app.access.feed import follow_changes
from iotsec.app.events import EventSink
from iotsec.app.pki.server_tls import ServerTls
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.errors import ConfigError, IotsecError

__all__ = ["STARTUP_FAILURE", "STOP_GRACE", "ServePlan", "run_servers", "supervise"]

log = logging.getLogger("iotsec.api")

#: The exit code of a serving process that could not start (uvicorn's own).
STARTUP_FAILURE = 3
#: Seconds a worker has to finish its answers after SIGTERM before it is killed.
STOP_GRACE = 30.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the signals to :func:`run_servers` (uvicorn's own
    handler would stop only the server that installed it last)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM meanwhile (only the main thread may set them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


async def _serve_all(servers: Sequence[_Server], sockets: Sequence[socket.socket],
                     everyone: Sequence[_Server], started: Callable[[], None] | None) -> None:
    """Serve ``servers`` in this loop until one stops; ``started`` is called once every
    server of ``everyone`` (these and those in other loops) listens."""
    tasks = [asyncio.create_task(server.serve(sockets=[sock]))
             for server, sock in zip(servers, sockets, strict=True)]
    if started is not None:
        while not all(s.started for s in everyone) and not any(t.done() for t in tasks) \
                and not any(s.should_exit for s in everyone):
            await asyncio.sleep(0.05)
        if all(s.started for s in everyone):
            started()
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


def run_servers(configs: Sequence[uvicorn.Config], sockets: Sequence[socket.socket], *,
                started: Callable[[], None] | None = None, apart: Collection[int] = ()
                ) -> None:
    """Serve each of ``configs`` on the socket at the same place in ``sockets`` (bound,
    not yet listening), until SIGINT or SIGTERM. ``started`` is called once every server
    listens. The servers share one event loop, made by the first config's loop factory in
    this thread, except those whose index is in ``apart``: each of those has a loop of its
    own, in a thread of its own. A server that stops, or fails, stops the others.

    Why apart: a TLS handshake runs on its listener's loop. The EST listener's devices each
    open a mutual-TLS connection, and in a renewal storm their handshakes would hold up the
    decisions and CRLs the API's loop answers; in a loop of its own, OpenSSL computes a
    handshake's signatures while the API's loop runs (it lets go of the interpreter)."""
    servers = [_Server(config) for config in configs]
    failures: list[BaseException] = []

    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    def stop(sig: int, frame: FrameType | None) -> None:
        del frame
        for server in servers:
            if sig == signal.SIGINT and server.should_exit:
                server.force_exit = True
            server.should_exit = True

    def serve_apart(index: int) -> None:
        try:
            with asyncio.Runner(loop_factory=configs[index].get_loop_factory()) as runner:
                runner.run(_serve_all([servers[index]], [sockets[index]], servers, None))
        except BaseException as exc:  # raised again by this thread once all have stopped
            failures.append(exc)
        finally:
            stop_all()

    shared = [i for i in range(len(servers)) if i not in apart]
    threads = [threading.Thread(target=serve_apart, args=(i,), name=f"iotsec-listener-{i}",
                                daemon=True) for i in sorted(apart)]
    with _signals(stop):
        for thread in threads:
            thread.start()
        try:
            with asyncio.Runner(loop_factory=configs[0].get_loop_factory()) as runner:
                runner.run(_serve_all([servers[i] for i in shared],
                                      [sockets[i] for i in shared], servers, started))
        finally:
            stop_all()
            for thread in threads:
                thread.join()
    if failures:
        raise failures[0]


@dataclass(frozen=True)
class ServePlan:
    """What a serving process serves: the API listener with the uvicorn options ``api``,
    unless ``est`` is None, the EST listener with the options ``est`` and a TLS context
    over the server TLS files ``est_tls`` (see :mod:`iotsec.api.est_tls`), and unless
    ``public`` is None, the public plain-HTTP listener (:mod:`iotsec.api.public_http`).

    Called with sockets, as the target of a worker process, it opens its own runtime from
    the environment's settings and serves until it is stopped."""

    api: Mapping[str, Any]
    est: Mapping[str, Any] | None = None
    est_tls: ServerTls | None = None
    #: The public plain-HTTP listener's options (OCSP, CRLs, CA certificates), or None.
    public: Mapping[str, Any] | None = None
    #: The host the server certificate is for and its files: kept current while serving
    #: (:mod:`iotsec.api.live_tls`); None when no listener uses TLS.
    live_tls: tuple[str, ServerTls] | None = None

    def configs(self, rt: Runtime) -> list[uvicorn.Config]:
        """The uvicorn configurations of the listeners, over the applications of ``rt``
        (the EST listener's claim CAs watched until ``rt`` closes)."""
        api = create_app(rt)
        configs = [uvicorn.Config(api, **self.api)]
        if self.est is not None:
            if self.est_tls is None:
                raise ConfigError("the EST listener needs the server's TLS files")
            context = est_context(rt, self.est_tls)
            configs.append(uvicorn.Config(
                create_est_app(rt), **{**self.est,
                                       "ssl_context_factory": lambda _c, _d: context}))
        if self.public is not None:
            # /crl and /crl/... are answered by the API application's own routes.
            configs.append(uvicorn.Config(PublicApp(rt, api), **self.public))
        return configs

    @property
    def apart(self) -> tuple[int, ...]:
        """The listeners served in an event loop of their own (see :func:`run_servers`):
        the EST listener's mutual-TLS handshakes."""
        return (1,) if self.est is not None else ()

    def watch(self, rt: Runtime, configs: list[uvicorn.Config]) -> None:
        """Once ``configs`` are loaded: keep their TLS contexts current while ``rt`` is
        open (a CA rotated or retired, the server certificate reissued)."""
        if self.live_tls is None:
            return
        host, files = self.live_tls
        watch_serving(rt, host, files, api=configs[0].ssl,
                      est=configs[1].ssl if self.est is not None else None)

    def __call__(self, sockets: list[socket.socket], ready: Connection) -> None:
        """A worker process: serve on ``sockets``, saying on ``ready`` once it listens."""
        try:
            rt = open_runtime()
        except IotsecError as exc:
            log.error("a serving process cannot open the home: %s (%s)", exc, exc.hint)
            raise SystemExit(STARTUP_FAILURE) from None
        # A server records security events through a buffer flushed in the background.
        rt.events = EventSink(rt.engine, buffered=True)
        try:
            # The caches of security state follow the other processes' changes (on
            # PostgreSQL); then the policy and the registry in memory before the first
            # request, not by it.
            follow_changes(rt)
            warm_up(rt)
            configs = self.configs(rt)
            for config in configs:
                config.load()
            self.watch(rt, configs)
            run_servers(configs, sockets, started=lambda: ready.send(True), apart=self.apart)
        except IotsecError as exc:
            log.error("a serving process cannot start: %s (%s)", exc, exc.hint)
            raise SystemExit(STARTUP_FAILURE) from None
        finally:
            rt.close()


class _Worker:
    """One worker process and the pipe on which it says that it serves."""

    def __init__(self, spawn: SpawnContext, plan: ServePlan,
                 sockets: list[socket.socket]) -> None:
        self._ready_pipe, ready = spawn.Pipe(duplex=False)
        self.process: SpawnProcess = spawn.Process(target=plan, args=(sockets, ready),
                                                   name="iotsec-serve")
        self.process.start()
        ready.close()  # the worker holds the sending end: its exit reads as end of file
        self.ready = False

    def serving(self) -> bool:
        """Whether the worker said that it serves (by now)."""
        if not self.ready:
            with contextlib.suppress(EOFError, OSError):
                if self._ready_pipe.poll():
                    self.ready = bool(self._ready_pipe.recv())
        return self.ready

    def stop(self) -> None:
        """SIGTERM, by the worker's pid."""
        if self.process.is_alive():
            self.process.terminate()

    def join(self, grace: float) -> None:
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self._ready_pipe.close()


def supervise(plan: ServePlan, sockets: list[socket.socket], workers: int, *,
              grace: float = STOP_GRACE) -> None:
    """Run ``plan`` in ``workers`` processes on ``sockets`` until SIGINT or SIGTERM.
    A worker that stops after it served is replaced; one that stops before it served
    stops them all with ``ConfigError`` (its own error is in the log)."""
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    running: list[_Worker] = []

    def stop(sig: int, frame: FrameType | None) -> None:
        del sig, frame
        stopping.set()

    with _signals(stop):
        try:
            running.extend(_Worker(spawn, plan, sockets) for _ in range(workers))
            while not stopping.wait(0.5):
                for index, worker in enumerate(running):
                    served = worker.serving()
                    if worker.process.is_alive():
                        continue
                    code = worker.process.exitcode
                    if not served:
                        raise ConfigError(
                            f"a serving process stopped before it served (exit code {code})",
                            hint="see its error above")
                    log.warning("serving process %s stopped (exit code %s); starting another",
                                worker.process.pid, code)
                    worker.join(0)
                    running[index] = _Worker(spawn, plan, sockets)
        finally:
            for worker in running:
                worker.stop()
            for worker in running:
                worker.join(grace)
