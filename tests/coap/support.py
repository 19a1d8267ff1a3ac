"""Helpers for the CoAP gateway tests: a running gateway in a thread, libcoap's client."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iotsec.app.coap.gateway import GatewayOptions, run_gateway
from iotsec.app.runtime import Runtime
from iotsec.device import CoapClient
from tests.broker.support import Creds


@dataclass
class Running:
    address: tuple[str, int]
    thread: threading.Thread
    stop: threading.Event
    errors: list[BaseException]
    #: The OSCORE listener's address (with ``oscore_port=0``).
    oscore: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        return f"coaps://{self.address[0]}:{self.address[1]}"


@contextlib.contextmanager
def gateway(rt: Runtime, mqtt_port: int, **options: float) -> Iterator[Running]:
    stop = threading.Event()
    bound: list[tuple[str, int]] = []
    oscore: list[tuple[str, int]] = []
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_gateway(rt, GatewayOptions(port=0, mqtt_port=mqtt_port,
                                           **options), stop,  # type: ignore[arg-type]
                        ready=lambda a: (bound.append(a), ready.set()),
                        oscore_ready=oscore.append)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="coap-gateway", daemon=True)
    thread.start()
    assert ready.wait(15), "the gateway did not start"
    assert not errors, errors
    try:
        yield Running(bound[0], thread, stop, errors, oscore[0] if oscore else None)
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
    assert not errors, errors


@dataclass(frozen=True)
class Answer:
    returncode: int
    stdout: str
    stderr: str


def coap_client(binary: str, url: str, *, method: str = "get", payload: str | None = None,
                cert: Path | None = None, key: Path | None = None, ca: Path | None = None,
                observe: float | None = None, timeout: float = 10.0,
                extra: tuple[str, ...] = ()) -> Answer:
    """Run libcoap's ``coap-client-openssl`` once; ``-v 4`` makes it log the response
    code (e.g. ``2.04``) of an empty or refused response on stderr/stdout."""
    args = [binary, "-m", method, "-B", "5", "-v", "6"]
    if payload is not None:
        args += ["-e", payload]
    if cert is not None:
        args += ["-c", str(cert)]
    if key is not None:
        args += ["-j", str(key)]
    if ca is not None:
        args += ["-R", str(ca)]
    if observe is not None:
        args += ["-s", str(int(observe))]
    args += list(extra)
    args.append(url)
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    return Answer(done.returncode, done.stdout, done.stderr)


def client(address: tuple[str, int], creds: Creds, timeout: float = 5.0) -> CoapClient:
    """The device SDK's CoAP client for ``creds`` (not yet connected)."""
    return CoapClient.from_files(creds.cert, creds.key, creds.ca, address[0], address[1],
                                 timeout=timeout)
