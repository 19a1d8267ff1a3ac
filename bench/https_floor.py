"""The floor of certificate issuance over HTTPS in Python: what the server stack iotsec is
built on (uvicorn with its httptools parser and uvloop, Python's ``ssl``, pyca/cryptography)
costs for the reference's own work, with nothing of iotsec in it.

bench/est_bench.py ``--floor`` starts this as a server beside ``cfssl serve`` and ours, and
measures it with the same client in the same run. One request does what ``cfssl serve``'s
``/api/v1/cfssl/sign`` does without its certificate database: read the JSON body, load the
PEM CSR, verify its signature, build and sign a certificate for its key (CN from the CSR,
the reference's extensions of bench/issue_bench.py, a fresh random serial) with the P-256
CA key, and answer cfssl's JSON (``{"success": true, "result": {"certificate": PEM}}``).
No store, no authentication, no events, no policy: a bare ASGI callable, no framework.

Its rate is the most a Python server on this stack can answer on this machine, whatever the
application does on top; its server CPU per certificate is the least such a server spends.

``--server granian`` serves the same callable on granian instead (HTTP/1.1 and TLS in Rust:
hyper and rustls, with the application on the Python event loop), the other production
ASGI server the registries provide: what a different front end would change.

Run (normally by est_bench.py): ``python bench/https_floor.py --port P --ca-cert CA.pem
--ca-key CA-KEY.pem --tls-cert TLS.pem --tls-key TLS-KEY.pem [--workers N]
[--server uvicorn|granian]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

_CA_CERT = "IOTSEC_FLOOR_CA_CERT"
_CA_KEY = "IOTSEC_FLOOR_CA_KEY"
MAX_BODY = 64 * 1024


class _Signer:
    """The CA and the parts of every certificate that do not change (loaded once)."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SystemExit("the floor's CA key must be an EC key")
        self.key = key
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
        self.eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        self.key_usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False)

    def sign(self, pem: bytes) -> bytes:
        csr = x509.load_pem_x509_csr(pem)
        if not csr.is_signature_valid:
            raise ValueError("the CSR's signature does not verify")
        public_key = csr.public_key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(csr.subject)
                .issuer_name(self.cert.subject)
                .public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(self.key_usage, critical=True)
                .add_extension(self.eku, critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                               critical=False)
                .add_extension(self.aki, critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)


_signer: _Signer | None = None


def _get_signer() -> _Signer:
    global _signer
    if _signer is None:
        _signer = _Signer(Path(os.environ[_CA_CERT]), Path(os.environ[_CA_KEY]))
    return _signer


async def _reply(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI application: ``POST /sign`` as above; anything else 404."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _get_signer()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/sign":
        await _reply(send, 404, b'{"success": false}')
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY:
            await _reply(send, 413, b'{"success": false}')
            return
    try:
        pem = json.loads(body)["certificate_request"].encode()
        certificate = _get_signer().sign(pem)
    except (ValueError, KeyError, TypeError):
        await _reply(send, 400, b'{"success": false}')
        return
    await _reply(send, 200, json.dumps({"success": True, "result": {
        "certificate": certificate.decode()}}).encode())


def _serve_granian(args: argparse.Namespace) -> int:
    from granian.constants import Interfaces, Loops, SSLProtocols
    from granian.server import Server

    # granian reads PKCS#8 keys only; the TLS key is written again beside the original.
    key = serialization.load_pem_private_key(args.tls_key.read_bytes(), password=None)
    pkcs8 = args.tls_key.with_name(args.tls_key.name + ".pkcs8.pem")
    pkcs8.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    Server("https_floor:app", address="127.0.0.1", port=args.port,
           interface=Interfaces.ASGI, workers=args.workers, loop=Loops.uvloop,
           ssl_cert=args.tls_cert, ssl_key=pkcs8, ssl_protocol_min=SSLProtocols.tls12,
           log_access=False).serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-cert", type=Path, required=True)
    parser.add_argument("--ca-key", type=Path, required=True)
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    args = parser.parse_args(argv)
    os.environ[_CA_CERT] = str(args.ca_cert.resolve())
    os.environ[_CA_KEY] = str(args.ca_key.resolve())
    if args.server == "granian":
        return _serve_granian(args)
    uvicorn.run("https_floor:app", app_dir=str(Path(__file__).resolve().parent),
                host="127.0.0.1", port=args.port, workers=args.workers,
                ssl_certfile=str(args.tls_cert), ssl_keyfile=str(args.tls_key),
                http="httptools", loop="uvloop", log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
