"""EST enrolment speed: ``simpleenroll`` over HTTPS against ``cfssl serve``'s sign endpoint.

Goal: with 16 concurrent clients, ``POST /.well-known/est/simpleenroll`` on ``iotsec serve``'s
EST listener issues at least 1.5x as many certificates per second as ``cfssl serve``'s
``POST /api/v1/cfssl/sign`` (a P-256 CA), with the same client in the same run.

* ours: ``iotsec serve --http --port A --est-port E`` over a home made by ``iotsec init
  --key-type ecdsa-p256``; a provisioning template (``--id-from csr-cn``) and template
  enrolment secrets (``iotsec enrol secret create --template T --uses N``). Each request is
  the real EST path: HTTP Basic with the secret, a base64 PKCS#10 body, the device created
  just in time from the template, the certificate issued and written to the store, the
  security event recorded, a certs-only PKCS#7 answer.
* reference: ``cfssl serve`` (its CA made by ``cfssl gencert -initca``, P-256) over TLS
  (``-tls-cert``/``-tls-key``, a P-256 server certificate from the same CA), the same CSRs
  as JSON to ``/api/v1/cfssl/sign``; the goal's reference has no certificate database
  (cfssl's default).
* reference 2: the same ``cfssl serve`` with its certificate database (``-db-config``,
  SQLite, cfssl's defaults), which like ours writes every certificate it signs.
* floor (``--floor``): bench/https_floor.py, a bare ASGI callable on the stack ``iotsec
  serve`` runs on (uvicorn, httptools, uvloop, Python's ``ssl``, pyca/cryptography) doing
  cfssl's work and nothing else (the same JSON in and out, CSR check, certificate built and
  signed by the cfssl CA, no store), with one serving process and with one per CPU: the
  most any application served by this stack can answer here. ``--floor-stacks`` also
  serves it on granian (HTTP/1.1 and TLS in Rust); the summary then sets what
  pyca/cryptography alone costs per certificate beside the CPU per certificate the goal
  leaves (cfssl's own, over the goal's ratio).
* ``--api`` adds issuance through the HTTPS API (``--api-workers`` for ``iotsec serve
  --workers N``).

The client is bench/est_load.py in processes of its own (2 by default, sharing the 16
keep-alive TLS connections): closed loop, each request a fresh CSR (its own P-256 key) made
before it is sent; every request to ours carries a CSR never sent before (ours refuses a key
or a device name it has seen), and the cfssl servers get the same CSRs in the same round. A
second series opens a new TLS connection for every request (a full handshake each, as a
device that enrols once does). ``iotsec serve`` is measured with one serving process and with
as many as there are CPUs (``--workers``), cfssl with Go's default (every CPU). Each series
starts with a warm-up per server that also sizes its rounds (about ``--seconds`` each); the
rounds run the servers in a rotating order. Reported per server: the median rate, p50/p99
latency (closed loop: at saturation the mean is about connections / throughput), the
server's CPU time per certificate (``/proc/PID/stat``, its worker processes included), the
client's CPU, and the median of the per-round ratios to cfssl.

``--database-url postgresql+psycopg://USER@HOST/DB`` puts ours on PostgreSQL: a fresh
database on that server (made for the run, dropped afterwards) instead of the home's SQLite
file.

Run: ``python bench/est_bench.py [--quick] [--database-url URL] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from common import (
    Report,
    add_database_argument,
    home_settings,
    load_average,
    machine_info,
    on_store,
    print_machine,
    scratch_dir,
    verdict,
)
from est_load import http_request, percentiles, write_requests

GOAL_RATIO = 1.5
HERE = Path(__file__).resolve().parent
LOAD = HERE / "est_load.py"
TEMPLATE = "bench"
MAX_USES = 10_000  # uses of one enrolment secret


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iotsec_command() -> str:
    return str(Path(sys.executable).with_name("iotsec"))


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of ``iotsec`` commands and servers over ``home`` (the failure
    throttle raised: the benchmark's clients all come from one address)."""
    return {**os.environ, "IOTSEC_HOME": str(home), "IOTSEC_AUTH_FAILURE_LIMIT": "1000000",
            **extra}


def iotsec(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([iotsec_command(), *args], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"iotsec {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads) and of its running
    child processes (a server's workers), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except OSError:
            continue
        total += sum(cpu_seconds(int(child)) for child in children)
    return total


@dataclass
class Server:
    """A server process this benchmark started (stopped by its pid)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def wait_tls(self, port: int, cafile: Path, timeout: float = 120) -> None:
        """Until a TLS handshake on ``port`` succeeds and verifies against ``cafile``."""
        context = ssl.create_default_context(cafile=str(cafile))
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
            except (OSError, ssl.SSLError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer TLS on {port}: {exc}; "
                                       f"{self.log.read_text()[-3000:]}") from exc
                time.sleep(0.2)

    def wait_http(self, port: int, timeout: float = 120) -> None:
        """Until ``GET /healthz`` over plain HTTP answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer on {port}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run_load(*args: str, timeout: float = 7200) -> dict[str, Any]:
    """bench/est_load.py in its own process; its JSON result."""
    proc = subprocess.run([sys.executable, str(LOAD), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"est_load {args[0]} failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run_closed(port: int, cafile: Path, requests: list[bytes], work: Path, *,
               connections: int, processes: int, new_connection: bool,
               timeout: float = 7200) -> dict[str, Any]:
    """The closed-loop client (bench/est_load.py closed) as ``processes`` processes sharing
    ``connections`` connections and the requests; their results merged: the rate is every
    answered request over the time from the first start to the last end."""
    procs = []
    for n in range(processes):
        part = requests[n::processes]
        file = work / f"requests-{n}"
        write_requests(file, part)
        argv = [sys.executable, str(LOAD), "closed", "--port", str(port), "--cafile",
                str(cafile), "--requests", str(file), "--connections",
                str(max(1, connections // processes + (n < connections % processes)))]
        procs.append(subprocess.Popen([*argv, *(["--new-connection"] if new_connection
                                                else [])],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    parts = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"est_load closed failed: {err.decode()[-3000:]}")
        parts.append(json.loads(out))
    for n in range(processes):
        (work / f"requests-{n}").unlink()
    statuses: dict[str, int] = {}
    for part in parts:
        for code, k in part["statuses"].items():
            statuses[code] = statuses.get(code, 0) + k
    start, end = min(p["start"] for p in parts), max(p["end"] for p in parts)
    ok = statuses.get("200", 0) + statuses.get("201", 0)  # EST answers 200, the API 201
    return {"requests": len(requests), "ok": ok, "statuses": statuses, "seconds": end - start,
            "rate": ok / (end - start) if end > start else float("nan"),
            **percentiles([x for p in parts for x in p["latencies"]]),
            "client_cpu_s": sum(p["client_cpu_s"] for p in parts),
            "samples": [x for p in parts for x in p["samples"]],
            "failures": [x for p in parts for x in p["failures"]][:20]}


# --------------------------------------------------------------------------- inputs


def make_csr(common_name: str, key: ec.EllipticCurvePrivateKey | None = None
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return key, csr


def est_body(csr: x509.CertificateSigningRequest) -> bytes:
    """An RFC 8951 body: the DER CSR in base64, 64-character lines."""
    text = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))
    return b"".join(text[i:i + 64] + b"\n" for i in range(0, len(text), 64))


def basic(secret_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{secret_id}:{secret}".encode()).decode()


def spki(key: ec.EllipticCurvePublicKey | Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def read_pkcs7_body(body: bytes) -> list[x509.Certificate]:
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def check_issued(certs: Sequence[x509.Certificate], issuer: x509.Certificate,
                 wanted: dict[str, bytes], label: str) -> int:
    """Every sample certificate is signed by ``issuer`` and certifies the key of the CSR of
    the name it carries; returns how many were checked."""
    for cert in certs:
        cert.verify_directly_issued_by(issuer)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(names[0].value) if names else ""
        if wanted.get(name) != spki(cert.public_key()):
            raise AssertionError(f"{label}: {name!r} does not certify its CSR's key")
    return len(certs)


# --------------------------------------------------------------------------- cfssl


def cfssl_setup(work: Path) -> tuple[Path, Path, Path, Path, Path]:
    """A P-256 CA by ``cfssl gencert -initca``, a signing config, and a P-256 TLS server
    certificate for 127.0.0.1 from that CA; (ca, ca key, config, tls cert, tls key)."""
    d = work / "cfssl"
    d.mkdir()
    (d / "ca.json").write_text(json.dumps({"CN": "bench cfssl CA",
                                           "key": {"algo": "ecdsa", "size": 256}}))
    (d / "config.json").write_text(json.dumps({"signing": {
        "default": {"expiry": "8760h", "usages": ["digital signature", "client auth"]},
        "profiles": {"server": {"expiry": "8760h",
                                "usages": ["digital signature", "server auth"]}}}}))
    (d / "tls.json").write_text(json.dumps({"CN": "127.0.0.1", "hosts": ["127.0.0.1"],
                                            "key": {"algo": "ecdsa", "size": 256}}))

    def bare(name: str, *args: str) -> None:
        made = subprocess.run(["cfssl", "gencert", *args], cwd=d, capture_output=True,
                              check=True)
        subprocess.run(["cfssljson", "-bare", name], cwd=d, input=made.stdout, check=True,
                       capture_output=True)

    bare("ca", "-initca", "ca.json")
    bare("tls", "-ca", "ca.pem", "-ca-key", "ca-key.pem", "-config", "config.json",
         "-profile", "server", "tls.json")
    return d / "ca.pem", d / "ca-key.pem", d / "config.json", d / "tls.pem", d / "tls-key.pem"


# cfssl's certificate database (certdb/sqlite/migrations/001_CreateCertificates.sql).
CFSSL_SCHEMA = """
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier));
"""


def start_cfssl(work: Path, files: tuple[Path, Path, Path, Path, Path], name: str,
                db: Path | None, servers: list[Server]) -> tuple[Server, int]:
    """``cfssl serve`` over TLS (warnings only in its log, as ``iotsec serve`` logs), with
    its certificate database in SQLite at ``db`` when given."""
    ca, ca_key, config, tls, tls_key = files
    port = free_port()
    argv = ["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port), "-ca", str(ca),
            "-ca-key", str(ca_key), "-config", str(config), "-tls-cert", str(tls),
            "-tls-key", str(tls_key), "-loglevel", "2"]
    if db is not None:
        with sqlite3.connect(db) as conn:
            conn.executescript(CFSSL_SCHEMA)
        db_config = work / f"{name}-db.json"
        db_config.write_text(json.dumps({"driver": "sqlite3", "data_source": str(db)}))
        argv += ["-db-config", str(db_config)]
    server = Server(name, argv, dict(os.environ), work / f"{name}.log")
    servers.append(server)
    server.start()
    server.wait_tls(port, ca)
    return server, port


def cfssl_request(port: int, path: str) -> Callable[[int, x509.CertificateSigningRequest],
                                                     bytes]:
    """How a request in cfssl's JSON (``{"certificate_request": PEM}``) is built for a CSR."""
    def build(index: int, csr: x509.CertificateSigningRequest) -> bytes:
        del index
        body = json.dumps({"certificate_request": csr.public_bytes(
            serialization.Encoding.PEM).decode()}).encode()
        return http_request("POST", f"127.0.0.1:{port}", path,
                            {"Content-Type": "application/json"}, body)

    return build


FLOOR_STACKS = {"uvicorn": "uvicorn + ssl + pyca/cryptography",
                "granian": "granian (hyper + rustls) + pyca/cryptography"}


def floor_target(work: Path, files: tuple[Path, Path, Path, Path, Path], workers: int,
                 servers: list[Server], stack: str = "uvicorn") -> Target:
    """bench/https_floor.py on ``stack`` with ``workers`` processes, over cfssl's CA and TLS
    files."""
    ca, ca_key, _config, tls, tls_key = files
    port = free_port()
    server = Server(f"https_floor --server {stack} --workers {workers}", [
        sys.executable, str(HERE / "https_floor.py"), "--port", str(port), "--ca-cert",
        str(ca), "--ca-key", str(ca_key), "--tls-cert", str(tls), "--tls-key", str(tls_key),
        "--workers", str(workers), "--server", stack], dict(os.environ),
        work / f"floor-{stack}-{workers}.log")
    servers.append(server)
    server.start()
    server.wait_tls(port, ca)

    build = cfssl_request(port, "/sign")
    label = (f"floor: {FLOOR_STACKS[stack]}, cfssl's work, no store"
             + (f", {workers} processes" if workers > 1 else ""))
    key = f"floor{workers}" if stack == "uvicorn" else f"floor{workers}-{stack}"
    return Target(key, label, server, port, ca, build, False,
                  x509.load_pem_x509_certificate(ca.read_bytes()), answer="cfssl")


def crypto_alone(files: tuple[Path, Path, Path, Path, Path], count: int = 3000) -> float:
    """Seconds of CPU one certificate of the floor's work costs in pyca/cryptography alone:
    load the PEM CSR, verify its signature, build and sign the certificate, write its PEM
    (bench/https_floor.py's ``_Signer.sign``), in this process, no server around it."""
    sys.path.insert(0, str(HERE))
    from https_floor import _Signer

    ca, ca_key, *_ = files
    signer = _Signer(ca, ca_key)
    pems = [make_csr(f"crypto-{i}")[1].public_bytes(serialization.Encoding.PEM)
            for i in range(count)]
    for pem in pems[:200]:
        signer.sign(pem)
    start = time.process_time()
    for pem in pems:
        signer.sign(pem)
    return (time.process_time() - start) / count


def cfssl_version() -> str:
    try:
        out = subprocess.run(["cfssl", "version"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"
    return " ".join(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith(("Version", "Runtime")))


# --------------------------------------------------------------------------- the run


@dataclass
class Target:
    """One measured server: how to build its request for a CSR, and its rounds."""

    key: str
    label: str
    server: Server
    port: int
    cafile: Path
    build: Callable[[int, x509.CertificateSigningRequest], bytes]
    ours: bool
    issuer: x509.Certificate
    #: Run (untimed) before a slice of requests is sent: the API target registers the
    #: devices its requests name.
    prepare: Callable[[Sequence[int]], None] | None = None
    #: How a sample answer carries the certificate: "est" (PKCS#7), "api" (JSON with its
    #: PEM) or "cfssl" (JSON).
    answer: str = "est"
    every: list[dict[str, Any]] = field(default_factory=list)
    rounds: dict[bool, list[dict[str, Any]]] = field(default_factory=dict)


def measure(target: Target, requests: list[bytes], work: Path, connections: int,
            processes: int, new_connection: bool) -> dict[str, Any]:
    cpu0 = target.server.cpu()
    result = run_closed(target.port, target.cafile, requests, work, connections=connections,
                        processes=processes, new_connection=new_connection)
    result["server_cpu_s"] = target.server.cpu() - cpu0
    target.every.append(result)
    return result


def ours_target(work: Path, env: dict[str, str], workers: int, secrets: list[str],
                servers: list[Server]) -> Target:
    """``iotsec serve`` with ``workers`` serving processes over the benchmark's home."""
    api, est = free_port(), free_port()
    chain = work / "iotsec-chain.pem"
    if not chain.exists():
        iotsec(env, "ca", "chain", "-o", str(chain))
    server = Server(f"iotsec serve --workers {workers}", [
        iotsec_command(), "serve", "--http", "--port", str(api), "--est-port", str(est),
        "--workers", str(workers)], env, work / f"iotsec-serve-{workers}.log")
    servers.append(server)
    server.start()
    server.wait_http(api)
    server.wait_tls(est, chain)
    path = f"/.well-known/est/{TEMPLATE}/simpleenroll"

    def build(index: int, csr: x509.CertificateSigningRequest) -> bytes:
        return http_request("POST", f"127.0.0.1:{est}", path, {
            "Authorization": secrets[index // MAX_USES], "Content-Type": "application/pkcs10",
            "Content-Transfer-Encoding": "base64"}, est_body(csr))

    issuing = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    label = "ours: EST simpleenroll, iotsec serve" + (f" --workers {workers}"
                                                       if workers > 1 else "")
    return Target(f"ours{workers}", label, server, est, chain, build, True, issuing)


def api_target(work: Path, env: dict[str, str], inputs: Inputs, servers: list[Server],
               workers: int = 1) -> Target:
    """``iotsec serve --workers N`` over HTTPS (its API listener with the home's server
    certificate): ``POST /v1/devices/{id}/certificates`` with an operator token, for
    devices registered before their requests are sent (the registration is not timed)."""
    api = free_port()
    chain = work / "iotsec-chain.pem"
    if not chain.exists():
        iotsec(env, "ca", "chain", "-o", str(chain))
    token = json.loads(iotsec(env, "token", "create", "bench-issuer", "--scope", "operator",
                              "--json"))["token"]
    server = Server(f"iotsec serve --workers {workers} (HTTPS API)", [
        iotsec_command(), "serve", "--host", "127.0.0.1", "--port", str(api), "--est-port",
        str(free_port()), "--workers", str(workers)], env,
        work / f"iotsec-serve-api-{workers}.log")
    servers.append(server)
    server.start()
    server.wait_tls(api, chain)

    def build(index: int, csr: x509.CertificateSigningRequest) -> bytes:
        name = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        body = json.dumps({"csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
        return http_request("POST", f"127.0.0.1:{api}", f"/v1/devices/{name}/certificates",
                            {"Authorization": f"Bearer {token}",
                             "Content-Type": "application/json"}, body.encode())

    def prepare(indexes: Sequence[int]) -> None:
        register_devices(work / "home", [str(inputs.pool[i].subject.get_attributes_for_oid(
            NameOID.COMMON_NAME)[0].value) for i in indexes])

    issuing = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    return Target("api" if workers == 1 else f"api{workers}",
                  "ours: HTTPS API POST /v1/devices/{id}/certificates (group commit)"
                  + (f", iotsec serve --workers {workers}" if workers > 1 else ""),
                  server, api, chain, build, True, issuing, prepare=prepare, answer="api")


def register_devices(home: Path, names: Sequence[str]) -> None:
    """Register ``names`` through the library (not timed: before their requests)."""
    from iotsec.app.identity import devices
    from iotsec.app.runtime import open_runtime

    rt = open_runtime(home_settings(home))
    try:
        devices.import_devices(rt, (devices.NewDevice.parse(n, ["bench"]) for n in names))
    finally:
        rt.close()


def cfssl_target(work: Path, files: tuple[Path, Path, Path, Path, Path], with_db: bool,
                 servers: list[Server]) -> Target:
    name = "cfssl_db" if with_db else "cfssl"
    db = work / "cfssl-certs.db" if with_db else None
    server, port = start_cfssl(work, files, name, db, servers)

    build = cfssl_request(port, "/api/v1/cfssl/sign")
    label = ("reference 2: cfssl serve with its SQLite certificate database" if with_db
             else "reference: cfssl serve, /api/v1/cfssl/sign")
    issuer = x509.load_pem_x509_certificate(files[0].read_bytes())
    return Target(name, label, server, port, files[0], build, False, issuer, answer="cfssl")


def check_samples(target: Target, result: dict[str, Any], wanted: dict[str, bytes]) -> None:
    samples = [base64.b64decode(b) for b in result["samples"]]
    if target.answer == "est":
        certs = [read_pkcs7_body(b)[0] for b in samples]
    elif target.answer == "api":
        certs = [x509.load_pem_x509_certificate(json.loads(b)["pem"].encode())
                 for b in samples]
    else:
        certs = [x509.load_pem_x509_certificate(json.loads(b)["result"]["certificate"]
                                                .encode()) for b in samples]
    check_issued(certs, target.issuer, wanted, target.label)


def count_iotsec_devices(home: Path) -> tuple[int, int]:
    """(device certificates, devices) in the home's store."""
    from sqlalchemy import func, select

    from iotsec.app.runtime import open_runtime
    from iotsec.store import models

    rt = open_runtime(home_settings(home))
    try:
        with rt.engine.connect() as conn:
            certs = conn.execute(select(func.count()).select_from(models.certificates)
                                 .where(models.certificates.c.kind == "device")).scalar_one()
            devices = conn.execute(select(func.count()).select_from(models.devices)
                                   ).scalar_one()
        return int(certs), int(devices)
    finally:
        rt.close()


@dataclass
class Inputs:
    """The CSR pool (a fresh key and name per request to ours, which refuses a key or a
    device name it has seen) and the template secrets that cover it."""

    env: dict[str, str]
    pool: list[x509.CertificateSigningRequest] = field(default_factory=list)
    wanted: dict[str, bytes] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)

    def take(self, n: int) -> range:
        """``n`` CSRs never sent before (made now if needed, and secrets to cover them)."""
        start = len(self.pool)
        t0 = time.perf_counter()
        for i in range(start, start + n):
            csr = make_csr(f"est-{i:07d}")[1]
            self.pool.append(csr)
            self.wanted[f"est-{i:07d}"] = spki(csr.public_key())
        while len(self.secrets) * MAX_USES < len(self.pool):
            made = json.loads(iotsec(self.env, "enrol", "secret", "create", "--template",
                                     TEMPLATE, "--uses", str(MAX_USES), "--expires", "6h",
                                     "--json"))
            self.secrets.append(basic(made["id"], made["secret"]))
        if n > 1000:
            print(f"# {n:,} CSRs made in {time.perf_counter() - t0:.1f} s", flush=True)
        return range(start, start + n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 round of about 2 s per server (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per series (default 3)")
    parser.add_argument("--seconds", type=float,
                        help="about how long each server's round lasts (default 10)")
    parser.add_argument("--connections", type=int, default=16,
                        help="concurrent client connections (default 16)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="client processes sharing the connections (default 2)")
    parser.add_argument("--workers", default=None, metavar="N[,N...]",
                        help="iotsec serve --workers values to measure (default: 1 and the "
                             "number of CPUs)")
    parser.add_argument("--no-handshakes", action="store_true",
                        help="skip the series with a new TLS connection per request")
    parser.add_argument("--no-cfssl-db", action="store_true",
                        help="skip cfssl with its certificate database")
    parser.add_argument("--api", action="store_true",
                        help="also measure issuance through the HTTPS API (POST "
                        "/v1/devices/{id}/certificates, operator token, devices registered "
                        "beforehand)")
    parser.add_argument("--api-workers", default="1", metavar="N[,N...]",
                        help="with --api: iotsec serve --workers values for the API "
                             "(default 1)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench/https_floor.py (the Python stack's floor)")
    parser.add_argument("--floor-stacks", default="uvicorn,granian", metavar="S[,S...]",
                        help="with --floor: the server stacks to measure it on (default: "
                             "uvicorn,granian)")
    parser.add_argument("--no-est", action="store_true",
                        help="skip the EST targets (with --api: the API against cfssl only)")
    add_database_argument(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write JSON")
    args = parser.parse_args()
    return on_store(args.database_url, "iotsec_est", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    args.warm = 100 if args.quick else 300
    series = [False] if args.no_handshakes else [False, True]
    api_workers = [int(w) for w in args.api_workers.split(",")]
    stacks = args.floor_stacks.split(",")
    if not set(stacks) <= set(FLOOR_STACKS):
        raise SystemExit(f"--floor-stacks: choose among {', '.join(FLOOR_STACKS)}")
    cpus = len(os.sched_getaffinity(0))
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else sorted({1, cpus}))

    machine = machine_info()
    machine["cfssl"] = cfssl_version()
    print_machine(machine)
    report = Report("EST simpleenroll against cfssl serve's sign endpoint", params={
        "concurrent connections": args.connections,
        "client processes": args.client_processes, "iotsec serve --workers": workers,
        "rounds per series": args.rounds, "seconds per server per round (about)": args.seconds,
        "warm-up requests per server and series": args.warm,
        "iotsec store": "PostgreSQL" if os.environ.get("IOTSEC_DATABASE_URL") else "SQLite",
        "series": ["keep-alive"] + ([] if args.no_handshakes
                                    else ["new TLS connection per request"]),
        "load average at start": load_average()})

    with scratch_dir("iotsec-bench-est-", args.keep) as work:
        home = work / "home"
        inputs = Inputs(home_env(home))
        iotsec(inputs.env, "init", "--store-passphrase", "--key-type", "ecdsa-p256", "--json")
        iotsec(inputs.env, "enrol", "template", "add", TEMPLATE, "--group", "bench", "--role",
               "device", "--id-from", "csr-cn", "--json")
        files = cfssl_setup(work)
        servers: list[Server] = []
        try:
            targets = [] if args.no_est else [
                ours_target(work, inputs.env, w, inputs.secrets, servers) for w in workers]
            if args.api:
                targets += [api_target(work, inputs.env, inputs, servers, w)
                            for w in api_workers]
            targets.append(cfssl_target(work, files, False, servers))
            if not args.no_cfssl_db:
                targets.append(cfssl_target(work, files, True, servers))
            if args.floor:
                targets += [floor_target(work, files, w, servers, stack)
                            for stack in stacks
                            for w in sorted({1, cpus})]
            for new_connection in series:
                run_series(targets, inputs, new_connection, args, work, report)
            crypto = crypto_alone(files) if args.floor else None
            report.check("sample answers of every round parse (ours: certs-only PKCS#7 in "
                         "base64; cfssl: JSON), are signed by the server's CA and certify the "
                         "key of the CSR whose name they carry")
        finally:
            for server in servers:
                server.stop()

        issued = sum(r["ok"] for t in targets if t.ours for r in t.every)
        stored, devices = count_iotsec_devices(home)
        report.check(f"iotsec store: {stored:,} device certificates and {devices:,} devices "
                     f"for {issued:,} answered issuances (EST enrolments and API requests)"
                     + ("" if stored == devices == issued else ": MISMATCH"))
        if not args.no_cfssl_db:
            with sqlite3.connect(work / "cfssl-certs.db") as conn:
                rows = conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
            answered = sum(r["ok"] for t in targets if t.key == "cfssl_db" for r in t.every)
            report.check(f"cfssl database: {rows:,} certificates for {answered:,} answered "
                         "requests" + ("" if rows == answered else ": MISMATCH"))

    summarise(report, targets, series, crypto)
    report.params["load average at end"] = load_average()
    report.print()
    report.write_json(args.json, machine)
    return 0


def run_series(targets: list[Target], inputs: Inputs, new_connection: bool,
               args: argparse.Namespace, work: Path, report: Report) -> None:
    """A warm-up per server, then rounds in a rotating order. Each iotsec server gets CSRs
    never sent before; the cfssl servers get the first iotsec server's CSRs of the round
    (repeated when they need more). Each server's count per round is its warm-up rate times
    ``args.seconds``, so that every server is measured for about as long."""
    mode = "new connection per request" if new_connection else "keep-alive"
    lead = next(t for t in targets if t.ours)

    def run(t: Target, indexes: Sequence[int]) -> dict[str, Any]:
        if t.prepare is not None:
            t.prepare(indexes)
        requests = [t.build(i, inputs.pool[i]) for i in indexes]
        return measure(t, requests, work, args.connections, args.client_processes,
                       new_connection)

    warm = inputs.take(args.warm)
    counts = {}
    for t in targets:
        slice_ = warm if t is lead or not t.ours else inputs.take(args.warm)
        r = run(t, slice_)
        if r["ok"] != args.warm:
            raise RuntimeError(f"{t.label} warm-up: {r['statuses']} {r['failures'][:3]}")
        counts[t.key] = max(args.warm, round(r["rate"] * args.seconds))
    for n in range(args.rounds):
        fresh = {t.key: inputs.take(counts[t.key]) for t in targets if t.ours}
        lead_slice = fresh[lead.key]
        for t in targets[n % len(targets):] + targets[:n % len(targets)]:
            indexes = fresh[t.key] if t.ours else [
                lead_slice[k % len(lead_slice)] for k in range(counts[t.key])]
            r = run(t, indexes)
            t.rounds.setdefault(new_connection, []).append(r)
            print(f"# {mode}, round {n + 1}, {t.key}: {r['ok']:,} in {r['seconds']:.1f} s, "
                  f"{r['rate']:,.0f} certs/s, p50 {r['p50_ms']:.1f} ms, p99 "
                  f"{r['p99_ms']:.1f} ms, server CPU "
                  f"{r['server_cpu_s'] / max(r['ok'], 1) * 1000:.2f} ms/cert, client CPU "
                  f"{r['client_cpu_s'] / max(r['ok'], 1) * 1000:.2f} ms/cert, "
                  f"{r['statuses']}", flush=True)
            if r["ok"] != len(indexes):
                report.check(f"{t.label}, {mode}, round {n + 1}: {r['ok']} of {len(indexes)} "
                             f"answered 200 ({r['statuses']}; {r['failures'][:3]})")
            check_samples(t, r, inputs.wanted)


def summarise(report: Report, targets: list[Target], series: list[bool],
              crypto: float | None = None) -> None:
    reference = next(t for t in targets if t.key == "cfssl")
    if crypto is not None:
        # What the goal leaves per certificate: cfssl's server CPU per certificate over the
        # goal ratio (with the cores cfssl kept busy), or the machine's every core over the
        # goal's rate (the client's share ignored): the most a server may spend at 1.5x.
        runs = reference.rounds[False]
        cfssl_cpu = sum(r["server_cpu_s"] for r in runs) / sum(r["ok"] for r in runs)
        rate = statistics.median(r["rate"] for r in runs)
        cores = len(os.sched_getaffinity(0))
        report.add("pyca/cryptography alone, the floor's work per certificate (load and "
                   "verify the CSR, build, sign, PEM; in-process, no server)", crypto * 1e6,
                   "us CPU", f"cfssl serve's whole server CPU per certificate: "
                   f"{cfssl_cpu * 1e6:,.0f} us")
        report.add(f"CPU per certificate a server may spend at {GOAL_RATIO}x cfssl",
                   cfssl_cpu / GOAL_RATIO * 1e6, "us",
                   f"with cfssl's cores; {cores / (GOAL_RATIO * rate) * 1e6:,.0f} us with all "
                   f"{cores} cores and no client; pyca alone takes "
                   f"{crypto / (cfssl_cpu / GOAL_RATIO):.2f}x the first")
    for new_connection in series:
        mode = "new TLS connection per request" if new_connection else "keep-alive"
        for t in targets:
            runs = t.rounds[new_connection]
            ok = sum(r["ok"] for r in runs)
            cpu = sum(r["server_cpu_s"] for r in runs)
            wall = sum(r["seconds"] for r in runs)
            client = sum(r["client_cpu_s"] for r in runs)
            report.add(f"{t.label}, {mode}", statistics.median(r["rate"] for r in runs),
                       "certs/s",
                       f"p50 {statistics.median(r['p50_ms'] for r in runs):.1f} ms, p99 "
                       f"{statistics.median(r['p99_ms'] for r in runs):.1f} ms; server "
                       f"{ok / cpu if cpu else float('nan'):,.0f} certs per CPU-second, "
                       f"{cpu / wall:.2f} cores busy; client CPU "
                       f"{client / ok * 1000:.2f} ms/cert; rounds "
                       + ", ".join(f"{r['rate']:,.0f}" for r in runs))
        for t in targets:
            if t is reference:
                continue
            ratio = statistics.median(a["rate"] / b["rate"] for a, b in zip(
                t.rounds[new_connection], reference.rounds[new_connection], strict=True))
            note = ("not a goal: the most this stack answers here"
                    if t.key.startswith("floor") else "")
            if t.ours:
                note = f"goal >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)}"
                if new_connection:
                    note = ("not the goal's series; against the goal's bar: "
                            f"{verdict(ratio >= GOAL_RATIO)}")
            report.add(f"ratio {t.key} / cfssl, {mode}", ratio, "x", note)


if __name__ == "__main__":
    sys.exit(main())
