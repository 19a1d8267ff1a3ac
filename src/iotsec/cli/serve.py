"""``iotsec serve``: the control-plane API over HTTPS (plain HTTP only on loopback)."""

from __future__ import annotations

import ipaddress
import threading
from typing import Annotated, Any

import typer

from iotsec.app.access.decisions import warm_up
from iotsec.app.events import EventSink
from iotsec.app.pki.server_tls import ensure_server_tls
from iotsec.cli.context import runtime
from iotsec.cli.output import err_console
from iotsec.errors import InvalidInputError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8443,
    http: Annotated[bool, typer.Option("--http", help="Plain HTTP (loopback only).")] = False,
    workers: Annotated[int, typer.Option(
        "--workers", min=1, max=64,
        help="Serving processes (each with its own caches; see IOTSEC_HOT_CACHE_SECONDS).",
    )] = 1,
) -> None:
    """Serve the REST API (HTTPS with a certificate from iotsec's own CA) and /crl."""
    # Imported here: the web stack is only needed by this command, and every other command
    # would pay for it at start-up.
    import uvicorn

    from iotsec.api.app import create_app

    if http and not _is_loopback(host):
        raise InvalidInputError(f"plain HTTP is only allowed on a loopback address, not {host}",
                                hint="drop --http to serve HTTPS, or use --host 127.0.0.1")
    with runtime() as rt:
        # A server records security events through a buffer flushed in the background.
        rt.events = EventSink(rt.engine, buffered=True)
        # With several workers, each process builds its own app and runtime from the same
        # environment (app_from_environment); this process only supervises them.
        app = create_app(rt) if workers == 1 else None
        if app is not None:
            # The policy and the registry in memory before the first request, not by it.
            warm_up(rt)
        scheme = "http" if http else "https"
        shown = f"[{host}]" if ":" in host else host
        files = None if http else ensure_server_tls(rt, host)
        stop = threading.Event()
        if rt.settings.campaign_tick_seconds > 0:
            # Update campaigns advance and time out devices without an outside scheduler.
            from iotsec.app.ota.campaigns import tick_loop

            threading.Thread(target=tick_loop, args=(rt, stop), name="iotsec-campaigns",
                             daemon=True).start()
        if rt.settings.broker_dir is not None:
            # Keeps the broker's ACL and CRL current (a CRL past its nextUpdate would lock
            # every device out).
            from iotsec.app.broker.mosquitto import refresh_loop

            threading.Thread(target=refresh_loop, args=(rt, rt.settings.broker_dir, stop),
                             name="iotsec-broker-sync", daemon=True).start()
        err_console.print(f"iotsec serving on {scheme}://{shown}:{port}"
                          + ("" if http else "  (clients trust the chain from 'iotsec ca chain')"),
                          markup=False)
        try:
            target: Any = app if workers == 1 else "iotsec.api.app:app_from_environment"
            uvicorn.run(target, factory=workers > 1, workers=workers if workers > 1 else None,
                        host=host, port=port, log_level="warning", server_header=False,
                        ssl_certfile=str(files.chain_file) if files else None,
                        ssl_keyfile=str(files.key_file) if files else None,
                        ssl_keyfile_password=files.key_password if files else None)
        finally:
            stop.set()
