"""The EST listener's TLS layer on a real uvicorn server, asked by real clients (curl,
``openssl s_client``, Python's ``ssl``): the ASGI TLS extension each request's scope gets
(seen through an application that echoes it), the certificates the handshake takes and
refuses, and trust anchors added to a live context.

Both HTTP parsers (httptools, h11) and both event loops (uvloop through ``iotsec serve``'s
loop, asyncio) are served with the options ``iotsec serve`` gives its EST listener."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotsec.api.est_tls import est_server_context
from iotsec.api.live_tls import Handover, LiveTls
from iotsec.app.pki.server_tls import ServerTls
from iotsec.cli.serve import est_uvicorn_options
from tests.enrol.asgi_est import Manufacturer, pem
from tests.enrol.stub_est import Pki
from tests.ports import free_port
from tests.security.serving import in_thread

PARSERS = ["httptools", "h11"]
LOOPS = ["iotsec", "asyncio"]


async def echo_tls(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with the scope's TLS extension as JSON (``null`` if none)."""
    if scope["type"] != "http":
        return
    body = json.dumps((scope.get("extensions") or {}).get("tls", None)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 not_before: datetime | None = None,
                 not_after: datetime | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    usage = x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                          decipher_only=False)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(issuer_key, hashes.SHA256()))


@dataclass(frozen=True)
class Client:
    """A client certificate's files: the certificate (with any chain it sends) and key."""

    cert: Path
    key: Path
    certificate: x509.Certificate


@dataclass(frozen=True)
class Clients:
    pki: Pki
    device: Client  # issued by the CA
    expired: Client  # issued by the CA, expired yesterday
    foreign: Client  # issued by a CA nobody registered
    under_intermediate: Client  # issued by an intermediate under the CA, sent with it
    intermediate: x509.Certificate

    @property
    def server_tls(self) -> ServerTls:
        return ServerTls(self.pki.server_cert, self.pki.server_key, "")


def _write(directory: Path, name: str, key: ec.EllipticCurvePrivateKey,
           *chain: x509.Certificate) -> Client:
    cert, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_text("".join(pem(c) for c in chain))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Client(cert, key_file, chain[0])


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Clients:
    root = tmp_path_factory.mktemp("tls-pki")
    pki = Pki(root / "ca")
    now = datetime.now(UTC)
    device_key = ec.generate_private_key(ec.SECP256R1())
    device = pki.issue(device_key.public_key(), "dev-1")
    old_key = ec.generate_private_key(ec.SECP256R1())
    old = _certificate("dev-old", old_key, pki.ca, pki.key,
                       not_before=now - timedelta(days=3), not_after=now - timedelta(days=1))
    factory = Manufacturer.create("Unregistered Factory CA")
    foreign_key, foreign = factory.claim("hw-1")
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _certificate("Line 2 Intermediate", inter_key, pki.ca, pki.key, ca=True)
    low_key = ec.generate_private_key(ec.SECP256R1())
    low = _certificate("dev-2", low_key, inter, inter_key)
    return Clients(pki, _write(root, "device", device_key, device),
                   _write(root, "expired", old_key, old),
                   _write(root, "foreign", foreign_key, foreign),
                   _write(root, "low", low_key, low, inter), inter)


@contextmanager
def est_listener(clients: Clients, *, anchors: Sequence[x509.Certificate],
                 skip_time_check: bool = False, parser: str = "httptools",
                 loop: str = "iotsec", tls: bool = True
                 ) -> Iterator[tuple[int, ssl.SSLContext]]:
    """:func:`echo_tls` served on a free port as ``iotsec serve`` serves its EST listener
    (its options, protocol and context), in a thread; its port and live context."""
    port = free_port()
    options = est_uvicorn_options(host="127.0.0.1", port=port, tls=clients.server_tls)
    options["http"] = type(options["http"])(header_timeout=5, parser=parser)
    if loop == "asyncio":
        options["loop"] = "asyncio"
    context = est_server_context(clients.pki.server_cert, clients.pki.server_key, None,
                                 anchors=anchors, skip_time_check=skip_time_check)
    if tls:
        options["ssl_context_factory"] = lambda _c, _d: context
    else:
        for name in ("ssl_certfile", "ssl_keyfile", "ssl_keyfile_password"):
            options[name] = None
    with in_thread(uvicorn.Config(echo_tls, **options)):
        yield port, context


def curl(port: int, ca: Path, *options: str, scheme: str = "https"
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca), *options,
                           f"{scheme}://127.0.0.1:{port}/echo"],
                          capture_output=True, text=True, timeout=30, check=False)


def echoed(done: subprocess.CompletedProcess[str]) -> Any:
    """What :func:`echo_tls` answered."""
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def extension(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    found = echoed(done)
    assert isinstance(found, dict), found
    return found


def _with(client: Client) -> tuple[str, ...]:
    return ("--cert", str(client.cert), "--key", str(client.key))


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("loop", LOOPS)
def test_the_verified_chain_reaches_the_scope(clients: Clients, parser: str,
                                              loop: str) -> None:
    pki = clients.pki
    with est_listener(clients, anchors=[pki.ca], parser=parser, loop=loop) as (port, _):
        # No client certificate: the extension is there (TLS), its chain empty.
        anonymous = extension(curl(port, pki.ca_file))
        assert anonymous["client_cert_chain"] == []
        assert anonymous["client_cert_name"] is None
        assert anonymous["client_cert_error"] is None
        assert anonymous["tls_version"] == 0x0304
        assert anonymous["cipher_suite"] in {0x1301, 0x1302, 0x1303}
        server_cert = x509.load_pem_x509_certificate(anonymous["server_cert"].encode())
        assert server_cert == x509.load_pem_x509_certificate(pki.server_cert.read_bytes())

        # A certificate the CA issued: the chain the handshake verified, leaf first, up to
        # the trust anchor, in PEM.
        tls = extension(curl(port, pki.ca_file, *_with(clients.device)))
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in tls["client_cert_chain"]]
        assert chain == [clients.device.certificate, pki.ca]
        assert tls["client_cert_name"] == "CN=dev-1"
        assert tls["client_cert_error"] is None

        # Two requests on one connection: each scope gets the extension.
        twice = curl(port, pki.ca_file, *_with(clients.device),
                     f"https://127.0.0.1:{port}/first")
        assert twice.returncode == 0, twice.stderr
        first, second = twice.stdout.replace("}{", "}\n{").splitlines()
        assert json.loads(first) == json.loads(second) == tls


def test_a_chain_through_an_intermediate_is_verified_to_the_anchor(clients: Clients) -> None:
    pki = clients.pki
    with est_listener(clients, anchors=[pki.ca]) as (port, _):
        tls = extension(curl(port, pki.ca_file, *_with(clients.under_intermediate)))
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in tls["client_cert_chain"]]
        assert chain == [clients.under_intermediate.certificate, clients.intermediate, pki.ca]
        assert tls["client_cert_name"] == "CN=dev-2"
    # Any anchor ends a chain, a CA that is not a root too (as a manufacturer's may be).
    with est_listener(clients, anchors=[clients.intermediate]) as (port, _):
        tls = extension(curl(port, pki.ca_file, *_with(clients.under_intermediate)))
        assert len(tls["client_cert_chain"]) == 2
        assert curl(port, pki.ca_file, *_with(clients.device)).returncode != 0


def test_tls12_reports_its_version_and_suite(clients: Clients) -> None:
    pki = clients.pki
    with est_listener(clients, anchors=[pki.ca]) as (port, _):
        tls = extension(curl(port, pki.ca_file, "--tlsv1.2", "--tls-max", "1.2", "--ciphers",
                             "ECDHE-ECDSA-AES128-GCM-SHA256", *_with(clients.device)))
        assert tls["tls_version"] == 0x0303
        assert tls["cipher_suite"] == 0xC02B
        assert len(tls["client_cert_chain"]) == 2


@pytest.mark.parametrize("parser", PARSERS)
def test_a_certificate_from_an_unknown_ca_fails_the_handshake(clients: Clients, openssl: str,
                                                              parser: str) -> None:
    pki = clients.pki
    with est_listener(clients, anchors=[pki.ca], parser=parser) as (port, _):
        refused = curl(port, pki.ca_file, *_with(clients.foreign))
        assert refused.returncode != 0 and refused.stdout == "", refused
        # TLS 1.2: refused within the handshake itself (the server's Finished never
        # comes), which s_client sees; the CA's own certificate is taken.
        def s_client(client: Client) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-CAfile",
                 str(pki.ca_file), "-cert", str(client.cert), "-key", str(client.key)],
                input="", capture_output=True, text=True, timeout=30, check=False)

        assert s_client(clients.foreign).returncode != 0
        assert s_client(clients.device).returncode == 0
        # The listener still serves.
        assert extension(curl(port, pki.ca_file, *_with(clients.device)))["client_cert_name"]


def test_an_expired_certificate_passes_only_when_the_time_check_is_skipped(
        clients: Clients) -> None:
    pki = clients.pki
    with est_listener(clients, anchors=[pki.ca]) as (port, context):
        assert not context.verify_flags & 0x200000
        refused = curl(port, pki.ca_file, *_with(clients.expired))
        assert refused.returncode != 0 and refused.stdout == "", refused
    with est_listener(clients, anchors=[pki.ca], skip_time_check=True) as (port, context):
        assert context.verify_flags & 0x200000
        tls = extension(curl(port, pki.ca_file, *_with(clients.expired)))
        # The application gets it and judges its validity itself.
        assert tls["client_cert_name"] == "CN=dev-old"
        # A certificate from an unknown CA is still refused.
        assert curl(port, pki.ca_file, *_with(clients.foreign)).returncode != 0


@pytest.mark.parametrize("parser", PARSERS)
def test_a_forged_client_certificate_header_never_reaches_the_extension(
        clients: Clients, parser: str) -> None:
    pki = clients.pki
    forged = quote(pem(clients.device.certificate))
    headers = [f"{name}: {value}" for name in ("X-SSL-Client-Cert", "X-Client-Cert",
                                               "SSL-Client-Cert", "X-Forwarded-Client-Cert")
               for value in (forged, pem(clients.device.certificate).replace("\n", " "))]
    header_options = [option for h in headers for option in ("-H", h)]
    with est_listener(clients, anchors=[pki.ca], parser=parser) as (port, _):
        anonymous = extension(curl(port, pki.ca_file, *header_options))
        assert anonymous["client_cert_chain"] == [] and anonymous["client_cert_name"] is None
        other = extension(curl(port, pki.ca_file, *header_options,
                               *_with(clients.under_intermediate)))
        assert other["client_cert_name"] == "CN=dev-2"


def test_a_resumed_tls12_session_carries_its_client_certificate(clients: Clients) -> None:
    """TLS 1.2 resumes by session id (OpenSSL's cache): the connection keeps the client
    certificate it was verified with, without the rest of its chain."""
    pki = clients.pki
    client = ssl.create_default_context(cafile=str(pki.ca_file))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.load_cert_chain(clients.device.cert, clients.device.key)

    def ask(port: int, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession, bool, Any]:
        with client.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                server_hostname="127.0.0.1", session=session) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            assert conn.session is not None
            body = data.split(b"\r\n\r\n", 1)[1]
            return conn.session, bool(conn.session_reused), json.loads(body)

    with est_listener(clients, anchors=[pki.ca], parser="h11") as (port, _):
        session, reused, first = ask(port, None)
        assert not reused and len(first["client_cert_chain"]) == 2
        _, reused, again = ask(port, session)
        assert reused
        assert again["client_cert_chain"] == first["client_cert_chain"][:1]
        assert again["client_cert_name"] == "CN=dev-1"


def test_plain_http_gets_no_extension(clients: Clients) -> None:
    """The specification forbids the extension on a connection that is not TLS."""
    with est_listener(clients, anchors=[clients.pki.ca], tls=False) as (port, _):
        assert echoed(curl(port, clients.pki.ca_file, scheme="http")) is None


def test_anchors_added_and_removed_while_serving_apply_without_a_restart(
        clients: Clients) -> None:
    """A claim CA registered while serving is trusted, and one removed is not, from the
    next handshake on (:class:`LiveTls` builds a context, :class:`Handover` hands new
    handshakes to it); established connections are not disturbed."""
    pki = clients.pki
    factory = Manufacturer.create("Acme Factory CA")
    claim_key, claim = factory.claim("hw-42")
    claim_client = _write(pki.root, "claim", claim_key, claim)
    registered: list[x509.Certificate] = [pki.ca]
    generation = iter(range(1_000_000))
    state = {"generation": next(generation)}
    files = clients.server_tls
    refreshed: list[ServerTls] = []

    def build(f: ServerTls) -> ssl.SSLContext:
        return est_server_context(f.chain_file, f.key_file, None, anchors=list(registered),
                                  skip_time_check=False)

    def refresh() -> ServerTls:
        refreshed.append(files)
        return files

    with est_listener(clients, anchors=[pki.ca]) as (port, context):
        watcher = LiveTls(files, generation=lambda: state["generation"], refresh=refresh,
                          est=Handover(context), build_est=build)
        assert curl(port, pki.ca_file, *_with(claim_client)).returncode != 0
        assert not watcher.poll() and refreshed == []  # nothing changed: nothing asked for
        registered.append(factory.certificate)
        assert not watcher.poll()  # the generation did not move yet
        state["generation"] = next(generation)
        assert watcher.poll() and refreshed == [files]
        assert not watcher.poll()
        tls = extension(curl(port, pki.ca_file, *_with(claim_client)))
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in tls["client_cert_chain"]]
        assert chain == [claim, factory.certificate]
        assert extension(curl(port, pki.ca_file, *_with(clients.device)))["client_cert_chain"]
        # Removed: the next handshake no longer trusts it; the device's CA still is.
        registered.remove(factory.certificate)
        state["generation"] = next(generation)
        assert watcher.poll()
        assert curl(port, pki.ca_file, *_with(claim_client)).returncode != 0
        assert extension(curl(port, pki.ca_file, *_with(clients.device)))["client_cert_chain"]
