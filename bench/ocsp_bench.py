"""Goal: at least 5,000 OCSP responses/s for cached good answers over HTTP, 16 clients.

1. A throw-away iotsec home (SQLite) with N device certificates (default 100), issued by
   the service as ``iotsec cert issue`` does; one nonce-less OCSP request (SHA-1 CertID,
   what RFC 5019 clients send) per certificate.
2. Ours: ``iotsec serve --public-http-port P --workers W`` (default one per CPU), over the
   public plain-HTTP listener, ``POST /ocsp``. Every request is asked once first, so the
   answers are pre-signed (as a fleet's relying parties keep them warm); then 16 clients,
   each on a keep-alive connection, send the requests in turn for S seconds, each the next
   one as soon as the last is answered (closed loop). The client runs in its own process
   (this script with ``--client``), on the other core of a 2-core machine.
3. Reference, same run, same requests: ``openssl ocsp -index index.txt -port P -multi W``
   over an index holding the same certificates as valid, signing with the same issuing CA
   key (OpenSSL signs every answer: it has no cache). It closes the connection after each
   answer, so its clients connect once per request; that is OpenSSL's responder as it is.
4. Every answer counted is an HTTP 200; a sample of each side's answers is parsed with
   pyca/cryptography and must say ``good``.

Prints responses/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from common import (
    Report,
    issuing_private_key,
    machine_info,
    print_machine,
    scratch_dir,
    settings_for,
    verdict,
)
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.issuance import issue_batch
from iotsec.app.runtime import open_runtime
from iotsec.app.setup import init_home
from iotsec.pki import x509 as enc
from iotsec.pki.ocsp import CertId
from iotsec.pki.ocsp_client import build_request

GOAL = 5000.0
CONSOLE = Path(sys.executable).parent / "iotsec"


# --------------------------------------------------------------------------- the client


async def _client(host: str, port: int, path: str, bodies: list[bytes], offset: int,
                  end: float, counts: list[int], errors: list[str]) -> None:
    heads = [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
              "Content-Type: application/ocsp-request\r\n"
              f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    loop = asyncio.get_running_loop()
    turn = offset
    reader = writer = None
    while loop.time() < end:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        assert reader is not None
        writer.write(heads[turn % len(heads)])
        turn += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            writer = None
            errors.append("connection lost")
            continue
        status = int(head.split(b" ", 2)[1])
        length, close = 0, head.startswith(b"HTTP/1.0")
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        body = b""
        if length:
            body = await reader.readexactly(length)
        elif close:
            body = await reader.read()
        # A successful OCSPResponse: SEQUENCE { ENUMERATED 0, ... } (an error status, such
        # as internalError, is an HTTP 200 too, and is not counted).
        if status == 200 and b"\x0a\x01\x00" in (body[2:5], body[3:6], body[4:7]):
            counts[0] += 1
        else:
            errors.append(f"{status} {body[:8].hex()}")
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _load(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counts = [0]
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    started = time.process_time()
    await asyncio.gather(*(_client(host, port, parts.path, bodies, i * len(bodies) // clients,
                                   start + seconds, counts, errors) for i in range(clients)))
    elapsed = loop.time() - start
    return {"responses": counts[0], "seconds": elapsed, "rate": counts[0] / elapsed,
            "errors": len(errors), "client_cpu": time.process_time() - started}


def client_main(args: argparse.Namespace) -> None:
    bodies = json.loads(Path(args.bodies).read_text())
    result = asyncio.run(_load(args.client, [bytes.fromhex(b) for b in bodies],
                               args.clients, args.seconds))
    print(json.dumps(result))


def _run_client(url: str, bodies_file: Path, clients: int, seconds: float) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--client", url, "--bodies",
                           str(bodies_file), "--clients", str(clients), "--seconds",
                           str(seconds)], capture_output=True, text=True, check=True,
                          timeout=seconds + 120)
    result: dict[str, float] = json.loads(done.stdout)
    return result


# --------------------------------------------------------------------------- the servers


def _csr() -> bytes:
    """A CSR over a fresh P-256 key (one key per device: iotsec refuses shared keys)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(
        key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, probe: bool) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start:\n{log.read_text()}")
        if not probe:
            # OpenSSL's responder serves one connection at a time: not probed. It says ACCEPT
            # once it listens (then, with -multi, its children take the connections).
            if b"ACCEPT" in log.read_bytes():
                time.sleep(1.0)
                return
        else:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            except OSError:
                pass
        time.sleep(0.1)


def _sample(url: str, bodies: list[bytes]) -> list[str]:
    parts = urlsplit(url)
    statuses = []
    for body in bodies[:5]:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("POST", parts.path, body=body,
                     headers={"Content-Type": "application/ocsp-request"})
        data = conn.getresponse().read()
        conn.close()
        statuses.append(ocsp.load_der_ocsp_response(data).certificate_status.name)
    return statuses


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="serving processes of each side (default: one per CPU)")
    parser.add_argument("--quick", action="store_true", help="20 certificates, 3 seconds")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--client", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    if args.quick:
        args.certs, args.seconds = 20, 3.0
    machine = machine_info()
    print_machine(machine)
    report = Report("OCSP: cached good answers over HTTP", {
        "certificates": args.certs, "clients": args.clients, "seconds": args.seconds,
        "serving processes (ours --workers, openssl -multi)": args.workers})
    with scratch_dir("iotsec-ocsp-bench-") as tmp:
        home = tmp / "home"
        init_home(settings_for(home), store_passphrase=True)
        rt = open_runtime(settings_for(home))
        names = [f"bench-{i:05d}" for i in range(args.certs)]
        for name in names:
            add_device(rt, NewDevice.parse(name))
        issued = issue_batch(rt, [(n, _csr()) for n in names])
        issuing = rt.authority("issuing")
        ca_key = issuing_private_key(rt)
        rt.close()
        subject, spki = issuing.subject, enc.spki_der(issuing.certificate.public_key())
        bodies = [build_request(CertId.for_certificate(subject, spki, int(c.serial, 16)), None)
                  for c in issued]
        bodies_file = tmp / "bodies.json"
        bodies_file.write_text(json.dumps([b.hex() for b in bodies]))
        # The reference's index and key: the same certificates, the same CA key.
        lines = []
        for c in issued:
            expiry = c.not_after.strftime("%y%m%d%H%M%SZ")
            lines.append(f"V\t{expiry}\t\t{c.serial}\tunknown\t/CN={c.subject}\n")
        (tmp / "index.txt").write_text("".join(lines))
        (tmp / "ca.pem").write_bytes(enc.to_pem(issuing.der, "CERTIFICATE"))
        (tmp / "ca.key").write_bytes(ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
        env["IOTSEC_HOME"] = str(home)
        port, public = _free_port(), _free_port()
        log = tmp / "serve.log"
        with log.open("wb") as out:
            ours = subprocess.Popen([str(CONSOLE), "serve", "--port", str(port), "--est-port",
                                     "0", "--public-http-port", str(public), "--workers",
                                     str(args.workers)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            _wait_port(public, ours, log, probe=True)
            url = f"http://127.0.0.1:{public}/ocsp"
            # Pre-signed: every request asked once by each worker's likely connection.
            _run_client(url, bodies_file, args.clients, 1.0)
            report.check(f"ours, sample of answers: {_sample(url, bodies)}")
            mine = _run_client(url, bodies_file, args.clients, args.seconds)
            report.check(f"ours: {mine['rate']:,.0f} responses/s")
        finally:
            _stop(ours)
        ref_port = _free_port()
        ref_log = tmp / "openssl.log"
        with ref_log.open("wb") as out:
            reference = subprocess.Popen(
                ["openssl", "ocsp", "-index", str(tmp / "index.txt"), "-port", str(ref_port),
                 "-rsigner", str(tmp / "ca.pem"), "-rkey", str(tmp / "ca.key"), "-CA",
                 str(tmp / "ca.pem"), "-nmin", "60", "-multi", str(args.workers)],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_port(ref_port, reference, ref_log, probe=False)
            ref_url = f"http://127.0.0.1:{ref_port}/"
            report.check(f"openssl, sample of answers: {_sample(ref_url, bodies)}")
            theirs = _run_client(ref_url, bodies_file, args.clients, args.seconds)
        finally:
            _stop(reference)
    report.add("iotsec serve (public HTTP, cached)", mine["rate"], "responses/s",
               f"{mine['responses']:.0f} in {mine['seconds']:.1f} s, {mine['errors']:.0f} "
               "errors")
    report.add("openssl ocsp -index -port", theirs["rate"], "responses/s",
               f"{theirs['responses']:.0f} in {theirs['seconds']:.1f} s, "
               f"{theirs['errors']:.0f} errors")
    report.add("ratio iotsec / openssl", mine["rate"] / max(theirs["rate"], 1e-9), "x")
    report.check(f"goal >= {GOAL:,.0f} responses/s: {verdict(mine['rate'] >= GOAL)}")
    report.print()
    report.write_json(args.json, machine)


if __name__ == "__main__":
    main()
