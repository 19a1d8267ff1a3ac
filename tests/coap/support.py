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


def edhoc_client_credentials(device: Creds, gateway_credential: bytes, *,
                             kid: bytes | None = None, by_key_id: bool = False) -> object:
    """aiocoap's EDHOC client credentials for ``device``: its certificate key in a CCS
    (subject: its device id), sent by value or named by its kid (``by_key_id``; ``kid``
    overrides the key's own kid), and the gateway's CCS as the expected peer."""
    import cbor2
    from aiocoap.edhoc import EdhocCredentials
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from iotsec.coap.edhoc import credential_kid

    key = serialization.load_pem_private_key(device.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    numbers = key.public_key().public_numbers()
    if kid is None:
        kid = credential_kid(key.public_key()) if by_key_id else b"\x01"
    own = {2: device.device_id,
           8: {1: {1: 2, 2: kid, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                   -3: numbers.y.to_bytes(32, "big")}}}
    return EdhocCredentials(
        suite=2, method=3, own_cred_style="by-key-id" if by_key_id else "by-value",
        own_cred={14: own},
        private_key={1: 2, -1: 1, -4: key.private_numbers().private_value.to_bytes(32, "big")},
        peer_cred={14: cbor2.loads(gateway_credential)})


def edhoc_posts(address: tuple[str, int], credentials: object, topics: list[str],
                payload: bytes = b"edhoc") -> list[str]:
    """POST ``payload`` to each topic through the gateway's OSCORE listener with aiocoap,
    which runs EDHOC with ``credentials`` first: the response codes (``"2.04"``...).
    aiocoap raises ``NotAProtectedMessage`` when EDHOC is refused."""
    import asyncio

    import aiocoap

    host, port = address

    async def run() -> list[str]:
        client = await aiocoap.Context.create_client_context()
        client.client_credentials[f"coap://{host}:{port}/*"] = credentials
        codes = []
        try:
            for topic in topics:
                response = await client.request(aiocoap.Message(
                    code=aiocoap.POST, uri=f"coap://{host}:{port}/ps/{topic}",
                    payload=payload)).response
                codes.append(str(response.code)[:4])
        finally:
            await client.shutdown()
        return codes

    return asyncio.run(run())
