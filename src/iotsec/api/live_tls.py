"""Live TLS of a running ``iotsec serve``: a CA change reaches its listeners within
:data:`POLL_SECONDS`, without a restart (on PostgreSQL at once: the change feed of
:mod:`iotsec.app.changes` wakes the watcher).

- **The EST listener's trust store** follows the CAs: a CA made by ``ca rotate`` (or
  imported) and a claim CA registered are trusted, a CA retired (``ca retire``) or a claim
  CA removed is not. OpenSSL cannot take a certificate out of a context's store, so a new
  context is built over the current anchors, and the listener's own context hands every
  new handshake over to the newest one (:class:`Handover`: its SNI callback, which OpenSSL
  calls on every ClientHello, with a server name or without, sets the connection's
  context before the client certificate is asked for). Established connections keep the
  context they were verified with.
- **The server certificate** is reissued, as a restart would do it, when its CA is no
  longer the active issuing CA (:func:`iotsec.app.pki.server_tls.refresh_server_tls`,
  under a lock file shared by the serving processes), and served from the next handshake
  on by both listeners, handed over the same way to a new context built over it. (Not
  ``load_cert_chain`` on the live context: it sets the certificate, then decrypts and sets
  the key, and a handshake that starts in between pairs the new certificate with the old
  key and fails.) A chain file replaced by another process (``cert
  revoke`` of the server's certificate) is loaded the same way.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

from iotsec.api.est_tls import est_context, est_generation
from iotsec.api.tls import server_context
from iotsec.app import changes
from iotsec.app.changes import Change
from iotsec.app.pki.authorities import trust_generation
from iotsec.app.pki.server_tls import ServerTls, refresh_server_tls
from iotsec.app.runtime import Runtime

__all__ = ["POLL_SECONDS", "Handover", "LiveTls", "watch_serving"]

log = logging.getLogger("iotsec.api")

#: How often a serving process asks the store whether the CAs changed (seconds).
POLL_SECONDS = 2.0


class Handover:
    """A listener's context (``base``, the one its connections are made from) that hands
    each new handshake over to :attr:`current` when that is a newer context."""

    def __init__(self, base: ssl.SSLContext) -> None:
        self.base = base
        self.current = base
        base.sni_callback = self._hand_over

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                   context: ssl.SSLContext) -> None:
        del server_name
        current = self.current
        if current is not context:
            connection.context = current


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class LiveTls:
    """A daemon thread that, every ``interval`` seconds, asks ``generation()`` whether the
    CAs changed and reads the served chain file; on a change it calls ``refresh()`` (the
    server's TLS files, reissued when due), hands ``api`` a new context over a new chain
    and, with ``est``, hands it the context ``build_est`` makes."""

    def __init__(self, files: ServerTls, *, generation: Callable[[], Hashable],
                 refresh: Callable[[], ServerTls], api: Handover | None = None,
                 est: Handover | None = None,
                 build_est: Callable[[ServerTls], ssl.SSLContext] | None = None,
                 interval: float = POLL_SECONDS) -> None:
        if (est is None) != (build_est is None):
            raise ValueError("est and build_est go together")
        self.files = files
        self._generation = generation
        self._refresh = refresh
        self._api = api
        self._est = est
        self._build_est = build_est
        self._interval = interval
        self._seen = generation()
        self._chain = _read(files.chain_file)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iotsec-live-tls", daemon=True)

    def start(self) -> LiveTls:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Poll now rather than at the end of the interval (the change feed announced a CA
        or a certificate change)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._interval + 5)

    def poll(self) -> bool:
        """Apply what changed since the last poll; whether anything did."""
        generation = self._generation()
        if generation == self._seen and _read(self.files.chain_file) == self._chain:
            return False
        files = self._refresh()
        chain = _read(files.chain_file)
        if chain != self._chain and self._api is not None:
            self._api.current = server_context(files.chain_file, files.key_file,
                                               files.key_password)
        if self._est is not None and self._build_est is not None:
            self._est.current = self._build_est(files)
        # Only once everything is loaded: a failure is tried again at the next poll.
        self.files, self._seen, self._chain = files, generation, chain
        return True

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                if self.poll():
                    log.info("TLS reloaded: server certificate %s, trust anchors current",
                             self.files.chain_file)
            except Exception:  # the store may be busy, a file half-written: next time
                log.exception("reloading the TLS configuration failed")


def watch_serving(rt: Runtime, host: str, files: ServerTls, *, api: ssl.SSLContext | None,
                  est: ssl.SSLContext | None) -> LiveTls:
    """Keep the listeners of a serving process current until ``rt`` closes: ``api`` (the
    API listener's context, None over plain HTTP) and ``est`` (the EST listener's, made by
    :func:`iotsec.api.est_tls.est_context`, or None), both over ``files`` for ``host``."""
    handover = None if est is None else Handover(est)
    api_handover = None if api is None else Handover(api)

    def generation() -> Hashable:
        return est_generation(rt) if est is not None else trust_generation(rt)

    def refresh() -> ServerTls:
        # The CAs this process keeps are looked up again now, not after the hot cache's
        # delay: the server certificate is checked against the CA that is active now.
        rt.authorities_changed()
        return refresh_server_tls(rt, host)

    watcher = LiveTls(files, generation=generation, refresh=refresh, api=api_handover,
                      est=handover,
                      build_est=None if est is None else (lambda f: est_context(rt, f))
                      ).start()
    rt.on_close(watcher.stop)

    def on_changes(batch: list[Change] | None) -> None:
        if batch is None or any(c.kind in ("authority", "cert") for c in batch):
            watcher.wake()

    # On PostgreSQL, a CA change or a revocation made through another process is looked
    # at as soon as it commits (the poll stays as the bound).
    changes.subscribe(rt, on_changes)
    return watcher
