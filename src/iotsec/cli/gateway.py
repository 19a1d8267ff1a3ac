"""``iotsec gateway``: protocol gateways for devices that do not speak MQTT over TLS."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Annotated

import typer

from iotsec.app.coap.gateway import GatewayOptions, run_gateway
from iotsec.app.wire.coap import GatewayListeningOut
from iotsec.cli.context import runtime
from iotsec.cli.options import JsonOpt
from iotsec.cli.output import emit_json, err_console

__all__ = ["app", "coap"]

app = typer.Typer(help="Protocol gateways: CoAP over DTLS for constrained devices.",
                  no_args_is_help=True)


@app.command("coap")
def coap(
    bind: Annotated[str, typer.Option("--bind", help="IP address of the UDP listener.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="UDP port (coaps: 5684).")] = 5684,
    mqtt_host: Annotated[str, typer.Option(
        "--mqtt-host", help="The MQTT broker the gateway bridges to (mutual TLS).")
                         ] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option("--mqtt-port", help="Its TLS port.")] = 8883,
    max_peers: Annotated[int, typer.Option(
        "--max-peers", min=1, max=100_000, help="DTLS sessions held at once.")] = 1000,
    idle_timeout: Annotated[float, typer.Option(
        "--idle-timeout", min=1, max=86_400,
        help="Seconds a silent DTLS session is kept.")] = 300.0,
    oscore_port: Annotated[int | None, typer.Option(
        "--oscore-port", min=0, max=65535,
        help="Also serve OSCORE-protected CoAP (RFC 8613) over plain UDP on this port "
        "(5683 is CoAP's); unprotected requests are refused there.")] = None,
    oscore_bind: Annotated[str | None, typer.Option(
        "--oscore-bind", help="IP address of the OSCORE listener (default: --bind).")
                           ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Serve CoAP over DTLS 1.2 (client certificates from this home's CA required) until
    stopped: POST /ps/<topic> publishes, GET /ps/<topic> with Observe subscribes, each
    decided by the device's roles and bridged to the MQTT broker."""
    options = GatewayOptions(bind=bind, port=port, mqtt_host=mqtt_host, mqtt_port=mqtt_port,
                             max_peers=max_peers, idle_timeout=idle_timeout,
                             oscore_port=oscore_port, oscore_bind=oscore_bind)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    oscore_bound: list[tuple[str, int]] = []

    def ready(bound: tuple[str, int]) -> None:
        out = GatewayListeningOut(protocol="coap+dtls", bind=bound[0], port=bound[1],
                                  mqtt_host=mqtt_host, mqtt_port=mqtt_port,
                                  oscore_bind=oscore_bound[0][0] if oscore_bound else None,
                                  oscore_port=oscore_bound[0][1] if oscore_bound else None)
        if as_json:
            emit_json(out)
            sys.stdout.flush()
        else:
            err_console.print(f"CoAP over DTLS on udp {bound[0]}:{bound[1]}, bridged to "
                              f"mqtts://{mqtt_host}:{mqtt_port}", markup=False)
            if oscore_bound:
                err_console.print(f"OSCORE-protected CoAP on udp {oscore_bound[0][0]}:"
                                  f"{oscore_bound[0][1]}", markup=False)

    with runtime() as rt:
        run_gateway(rt, options, stop, ready=ready, oscore_ready=oscore_bound.append)
