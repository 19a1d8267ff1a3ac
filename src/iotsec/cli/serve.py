"""``iotsec serve``: the control-plane API over HTTPS (plain HTTP only on loopback), device
enrolment over EST (RFC 7030) on a listener of its own, always HTTPS, and, when asked, the
public plain-HTTP listener for OCSP, CRLs and CA certificates (the one plaintext listener
allowed on any address: everything it serves is signed or public)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from iotsec.app.access.decisions import warm_up
from iotsec.app.access.feed import follow_changes
from iotsec.app.events import EventSink
from iotsec.app.pki.ocsp import prepare_responders
from iotsec.app.pki.server_tls import ServerTls, ensure_server_tls
from iotsec.app.runtime import Runtime
from iotsec.cli.context import runtime
from iotsec.cli.output import err_console
from iotsec.errors import ConflictError, InvalidInputError

__all__ = [
    "EST_PORT", "FILE_RESERVE", "HANDSHAKE_TIMEOUT", "HEADER_TIMEOUT", "IDLE_TIMEOUT",
    "MAX_CONNECTIONS", "Limits", "claim_port", "connection_limit", "est_uvicorn_options",
    "parse_forwarded_allow_ips", "public_uvicorn_options", "serve", "uvicorn_options"
]

# Defaults of the connection settings (seconds).
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
# Connections one serving process keeps open at most, and the open files it keeps for
# everything else (database, keys, logs, the listening socket).
MAX_CONNECTIONS = 2048
FILE_RESERVE = 256
#: The EST listener's default port.
EST_PORT = 8444


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_forwarded_allow_ips(text: str) -> tuple[str, ...]:
    """The proxy addresses of ``--forwarded-allow-ips``: comma-separated IP addresses or
    networks (CIDR), normalised. Anything else is refused, ``*`` included: trusting every
    peer's ``X-Forwarded-For`` would let any client choose the address it is throttled and
    recorded under."""
    found: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        try:
            found.append(str(ipaddress.ip_network(item) if "/" in item
                             else ipaddress.ip_address(item)))
        except ValueError:
            raise InvalidInputError(
                f"--forwarded-allow-ips: {item[:64]!r} is not an IP address or network",
                hint="list the reverse proxy's addresses, e.g. 10.0.0.5,10.0.1.0/24") from None
    return tuple(found)


def claim_port(host: str, port: int, option: str = "--port") -> socket.socket:
    """Bind ``host:port`` as uvicorn does (``SO_REUSEADDR``), so that a port in use is
    refused with one line (naming the ``option`` that chose it) before the server announces
    itself or starts anything. It does not listen: a client connecting while the server
    starts is refused (and can retry) rather than left in a backlog nobody reads. The
    server listens on this very socket once it is ready."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: "another process listens on it; stop that one or choose "
                f"another {option}",
                errno.EACCES: f"ports below 1024 need privileges; choose a higher {option}",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's; check --host",
                }.get(exc.errno or 0, f"check --host and {option}")
        raise ConflictError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                            hint=hint) from None
    return sock


@dataclass(frozen=True)
class Limits:
    """How long a connection may take over each step, and how many may be open at once (per
    serving process)."""

    header_timeout: float = HEADER_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


def connection_limit(requested: int | None, open_files: int) -> int:
    """The connection cap for a process allowed ``open_files`` descriptors: ``requested``,
    refused when it does not leave :data:`FILE_RESERVE` of them for everything else, or by
    default :data:`MAX_CONNECTIONS` lowered to fit."""
    room = open_files - FILE_RESERVE
    if requested is None:
        return max(1, min(MAX_CONNECTIONS, room))
    if requested > room:
        raise InvalidInputError(
            f"--limit-concurrency {requested} leaves too few of the process's {open_files} "
            "open files for the database, keys and logs",
            hint=f"use at most {max(room, 1)}, or raise the open-files limit (ulimit -n)")
    return requested


def uvicorn_options(*, host: str, port: int, tls: ServerTls | None,
                    forwarded_allow_ips: tuple[str, ...] = (),
                    limits: Limits | None = None) -> dict[str, Any]:
    """The uvicorn ``Config`` options of the API listener.

    Proxy headers are off unless proxies are named: uvicorn's default trusts
    ``X-Forwarded-For`` from loopback, so any local client could pick the address it is
    throttled and recorded under (and lock out another address, an EMQX node's included).
    The HTTP protocol, the event loop and the TLS context are iotsec's own
    (:mod:`iotsec.api.connections`, :mod:`iotsec.api.tls`): uvicorn has no setting for a
    header or handshake deadline, nor for the TLS suites beyond a cipher string.
    """
    # Imported here: the web stack is only needed by this command.
    from iotsec.api.connections import GuardedHttp, GuardedLoop
    from iotsec.api.tls import ssl_context_factory

    limits = limits or Limits()
    return {"host": host, "port": port, "log_level": "warning", "server_header": False,
            "proxy_headers": bool(forwarded_allow_ips),
            "forwarded_allow_ips": list(forwarded_allow_ips) or None,
            "http": GuardedHttp(header_timeout=limits.header_timeout),
            "loop": GuardedLoop(handshake_timeout=limits.handshake_timeout),
            "timeout_keep_alive": limits.idle_timeout,
            "limit_concurrency": limits.max_connections,
            "ssl_certfile": str(tls.chain_file) if tls else None,
            "ssl_keyfile": str(tls.key_file) if tls else None,
            "ssl_keyfile_password": tls.key_password if tls else None,
            "ssl_context_factory": ssl_context_factory if tls else None}


def est_uvicorn_options(*, host: str, port: int, tls: ServerTls,
                        limits: Limits | None = None) -> dict[str, Any]:
    """The uvicorn ``Config`` options of the EST listener: those of the API listener over
    the same server TLS files, with the protocol that hands the application the verified
    client certificate (:mod:`iotsec.api.est_tls`, whose context the serving process builds
    over its store), no proxy headers (identity comes from the TLS layer) and no
    WebSocket."""
    from iotsec.api.est_tls import TlsScopeHttp

    limits = limits or Limits()
    options = uvicorn_options(host=host, port=port, tls=tls, limits=limits)
    options.pop("ssl_context_factory")
    options.update(http=TlsScopeHttp(header_timeout=limits.header_timeout), ws="none")
    return options


def public_uvicorn_options(*, host: str, port: int, limits: Limits | None = None
                           ) -> dict[str, Any]:
    """The uvicorn ``Config`` options of the public plain-HTTP listener: those of the API
    listener without TLS, proxy headers or WebSocket."""
    options = uvicorn_options(host=host, port=port, tls=None, limits=limits)
    options.update(ws="none", lifespan="on")
    return options


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8443,
    http: Annotated[bool, typer.Option("--http", help="Plain HTTP (loopback only).")] = False,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=64,
        help="Serving processes (each with its own caches; see IOTSEC_HOT_CACHE_SECONDS).",
    )] = 1,
    est_port: Annotated[int, typer.Option(
        "--est-port", min=0, max=65535,
        help="TCP port of the EST enrolment listener (RFC 7030, /.well-known/est/; always "
             "HTTPS, even with --http); 0 turns it off.",
    )] = EST_PORT,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        "--forwarded-allow-ips", metavar="ADDRS",
        help="Comma-separated addresses or networks of reverse proxies whose "
             "X-Forwarded-For and X-Forwarded-Proto are trusted. Off by default: "
             "without it, the connecting address is the client's.",
    )] = None,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", min=0.1, max=3600, metavar="SECONDS",
        help="A connection whose request headers are not complete this long after their "
             "first byte is closed.",
    )] = HEADER_TIMEOUT,
    idle_timeout: Annotated[float, typer.Option(
        "--idle-timeout", min=0.1, max=3600, metavar="SECONDS",
        help="A connection that sends nothing this long, after it opens or after an "
             "answer, is closed.",
    )] = IDLE_TIMEOUT,
    handshake_timeout: Annotated[float, typer.Option(
        "--handshake-timeout", min=0.1, max=3600, metavar="SECONDS",
        help="A TLS handshake not done this long after the connection opens is dropped.",
    )] = HANDSHAKE_TIMEOUT,
    public_http_port: Annotated[int, typer.Option(
        "--public-http-port", min=0, max=65535,
        help="TCP port of the public plain-HTTP listener: only /ocsp, /crl and "
             "/ca/{issuing.der,root.der,chain.pem} (signed or public answers, as RFC 5019 "
             "requires, on any address); 0 (the default) turns it off.",
    )] = 0,
    public_http_host: Annotated[str | None, typer.Option(
        "--public-http-host", metavar="ADDR",
        help="Address of the public plain-HTTP listener (default: --host).",
    )] = None,
    limit_concurrency: Annotated[int | None, typer.Option(
        "--limit-concurrency", min=1, metavar="N",
        help="Open connections per serving process; more are closed at once. "
             f"Default {MAX_CONNECTIONS}, lowered to fit the open-files limit (raised to "
             "its hard limit at start).",
    )] = None,
) -> None:
    """Serve the REST API (HTTPS with a certificate from iotsec's own CA), /crl and /ocsp,
    EST enrolment on --est-port, and OCSP, CRLs and CA certificates over plain HTTP on
    --public-http-port."""
    # Imported here: the connection guards load the web stack, which only this command
    # needs; every other command would pay for it at start-up.
    from iotsec.api.connections import raise_file_limit

    proxies = parse_forwarded_allow_ips(forwarded_allow_ips) \
        if forwarded_allow_ips is not None else ()
    if http and not _is_loopback(host):
        raise InvalidInputError(f"plain HTTP is only allowed on a loopback address, not {host}",
                                hint="drop --http to serve HTTPS, or use --host 127.0.0.1")
    if est_port == port:
        raise InvalidInputError(f"--est-port {est_port} is the API's --port",
                                hint="give the EST listener a port of its own, or 0 to turn "
                                     "it off")
    public_host = public_http_host or host
    if public_http_port and public_host == host and public_http_port in (port, est_port):
        raise InvalidInputError(f"--public-http-port {public_http_port} is already taken by "
                                "the API or the EST listener",
                                hint="give the public listener a port of its own")
    limits = Limits(header_timeout=header_timeout, idle_timeout=idle_timeout,
                    handshake_timeout=handshake_timeout,
                    max_connections=connection_limit(limit_concurrency, raise_file_limit()))
    with runtime() as rt, contextlib.ExitStack() as claims:
        # The ports before anything else: a server that cannot listen must not announce
        # that it serves, nor start its background work.
        sockets = [claims.enter_context(claim_port(host, port))]
        if est_port:
            sockets.append(claims.enter_context(claim_port(host, est_port, "--est-port")))
        if public_http_port:
            sockets.append(claims.enter_context(
                claim_port(public_host, public_http_port, "--public-http-port")))
        _serve(rt, _Listening(host, port, est_port, http, sockets, public_host,
                              public_http_port), workers, proxies, limits)


@dataclass(frozen=True)
class _Listening:
    """Where ``iotsec serve`` listens: the claimed sockets, API's first."""

    host: str
    port: int
    est_port: int
    http: bool
    sockets: list[socket.socket]
    public_host: str = ""
    public_port: int = 0

    def banner(self) -> str:
        api = _url("http" if self.http else "https", self.host, self.port)
        est = f", EST on {_url('https', self.host, self.est_port)}/.well-known/est/" \
            if self.est_port else ""
        if self.public_port:
            est += f", OCSP/CRL/CA on {_url('http', self.public_host, self.public_port)}"
        return (f"iotsec serving on {api}{est}"
                + ("" if self.http and not self.est_port
                   else "  (clients trust the chain from 'iotsec ca chain')"))


def _serve(rt: Runtime, where: _Listening, workers: int, proxies: tuple[str, ...],
           limits: Limits) -> None:
    # Imported here: the web stack is only needed by this command, and every other command
    # would pay for it at start-up.
    from iotsec.api.listeners import ServePlan, run_servers, supervise

    # A server records security events through a buffer flushed in the background.
    rt.events = EventSink(rt.engine, buffered=True)
    # EST needs TLS even when the API is served over plain HTTP.
    files = None if where.http and not where.est_port else ensure_server_tls(rt, where.host)
    plan = ServePlan(
        api=uvicorn_options(host=where.host, port=where.port,
                            tls=None if where.http else files,
                            forwarded_allow_ips=proxies, limits=limits),
        est=est_uvicorn_options(host=where.host, port=where.est_port, tls=files,
                                limits=limits) if where.est_port and files else None,
        est_tls=files if where.est_port else None,
        public=public_uvicorn_options(host=where.public_host, port=where.public_port,
                                      limits=limits) if where.public_port else None,
        live_tls=None if files is None else (where.host, files))
    # Each CA's OCSP responder certificate before the first request (and before workers
    # start, which would otherwise race to issue it): a key that does not load is one line.
    prepare_responders(rt)
    configs = None
    if workers == 1:
        # The caches of security state follow the changes other serving processes make
        # (on PostgreSQL); the policy and the registry in memory before the first request.
        follow_changes(rt)
        warm_up(rt)
        configs = plan.configs(rt)
        # Applications and TLS contexts before the announcement: a key that does not load
        # is one line, and nothing was said to serve.
        for config in configs:
            config.load()
        plan.watch(rt, configs)
    # With several workers, each process builds its own applications and runtime from the
    # same environment (ServePlan); this process only supervises them.
    # On SQLite the WAL is copied into the database file beside the requests, not inside
    # their commits (ADR 0048): one thread for the whole server, in this process.
    rt.checkpoint_in_background()
    stop = threading.Event()
    detector: threading.Thread | None = None
    if rt.settings.detect_tick_seconds <= 0:
        # Without the detector lease, every serving process runs the schedules itself.
        if rt.settings.campaign_tick_seconds > 0:
            # Update campaigns advance and time out devices without an outside scheduler.
            from iotsec.app.ota.tick import tick_loop

            threading.Thread(target=tick_loop, args=(rt, stop), name="iotsec-campaigns",
                             daemon=True).start()
        if rt.settings.event_checkpoint_seconds > 0:
            # Signed checkpoints of the event chain, so that what is recorded cannot be
            # rewritten unnoticed by anyone without the audit key.
            from iotsec.app.monitor.chain import checkpoint_loop

            threading.Thread(target=checkpoint_loop, args=(rt, stop),
                             name="iotsec-checkpoints", daemon=True).start()
    if rt.settings.detect_tick_seconds > 0:
        # Detection (the broker log and the EMQX hook events) and the schedules (alert
        # checks and deliveries, campaign ticks, event-chain checkpoints), run by the one
        # serving process that holds the detector lease in the store; the others stand by
        # and take over when it stops.
        from iotsec.app.detect.loop import detector_loop

        detector = threading.Thread(target=detector_loop, args=(rt, stop),
                                    name="iotsec-detector", daemon=True)
        detector.start()
    elif rt.settings.alert_tick_seconds > 0:
        # Scheduled alert checks (expiring certificates and CAs, stale CRLs, paused
        # campaigns) and the alert deliveries, with their retries.
        from iotsec.app.monitor.checks import alert_loop

        threading.Thread(target=alert_loop, args=(rt, stop), name="iotsec-alerts",
                         daemon=True).start()
    if rt.settings.broker_dir is not None:
        # Keeps the broker's ACL and CRL current (a CRL past its nextUpdate would lock
        # every device out).
        from iotsec.app.broker.mosquitto import refresh_loop

        threading.Thread(target=refresh_loop, args=(rt, rt.settings.broker_dir, stop),
                         name="iotsec-broker-sync", daemon=True).start()
    err_console.print(where.banner(), markup=False, soft_wrap=True)
    try:
        if configs is not None:
            run_servers(configs, where.sockets, apart=plan.apart)
        else:
            supervise(plan, where.sockets, workers)
    finally:
        stop.set()
        if detector is not None:
            # Long enough to release the detector lease, so another server takes it at once.
            detector.join(timeout=2)
