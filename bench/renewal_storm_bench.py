"""Renewal storm: every device re-enrols over EST at once; the decision and CRL endpoints
must keep answering meanwhile.

Goal: while N devices (100,000) re-enrol (``POST /.well-known/est/simplereenroll`` over
mutual TLS with their current certificate) as fast as ``iotsec serve`` takes them, the same
server answers ``POST /v1/authz/check`` and ``GET /crl`` on its API listener with p99 under
50 ms.

* Setup (not timed): ``iotsec init --key-type ecdsa-p256``; N devices registered and one
  certificate issued to each through the library (``devices.import_devices``,
  ``issuance.issue_batch`` in batches of 1000) into the home, before the server starts; a
  fresh P-256 key and CSR per device for its re-enrolment.
* ``iotsec serve --http --port A --est-port E``: the API listener over plain HTTP on loopback
  (as bench/authz_bench.py), EST over HTTPS.
* Storm: bench/est_load.py ``storm`` in its own process, 32 workers; each device opens its
  own TLS connection presenting its certificate and sends its re-enrolment (closed loop: as
  fast as the server answers).
* Probe: bench/est_load.py ``probe`` in another process, open loop at fixed rates over
  keep-alive connections (decisions for random fleet devices, as bench/authz_bench.py sends;
  the CRL), latency counted from each request's scheduled time. It runs from before the
  storm until after it; its samples are cut into the baseline window (the same server, no
  storm, in the same run) and the storm window.

``--database-url postgresql+psycopg://USER@HOST/DB`` puts the store on PostgreSQL: a fresh
database on that server, made for the run and dropped afterwards.

Run: ``python bench/renewal_storm_bench.py [--quick] [--devices N] [--database-url URL]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

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
from est_bench import (
    LOAD,
    Server,
    est_body,
    free_port,
    home_env,
    iotsec,
    iotsec_command,
    make_csr,
    read_pkcs7_body,
    run_load,
)
from est_load import percentiles
from iotsec.app.identity import devices
from iotsec.app.pki import issuance
from iotsec.app.runtime import open_runtime
from iotsec.store import models

GOAL_P99_MS = 50.0
BATCH = 1000


def prepare_fleet(home: Path, n: int, out: Path) -> dict[str, float]:
    """Register ``n`` devices, issue each a certificate (library, batches of 1000), and
    write one JSON line per device for the storm: its id, key + certificate (PEM), and the
    base64 CSR of a fresh key for its re-enrolment. Returns the setup timings."""
    timings: dict[str, float] = {}
    ids = [f"storm-{i:06d}" for i in range(n)]
    rt = open_runtime(home_settings(home))
    try:
        t0 = time.perf_counter()
        devices.import_devices(rt, (devices.NewDevice.parse(d, ["fleet"],
                                                             {"model": f"m{i % 20}"})
                                    for i, d in enumerate(ids)))
        timings["register_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with out.open("w") as fh:
            for start in range(0, n, BATCH):
                chunk = ids[start:start + BATCH]
                made = [make_csr(d) for d in chunk]
                records = issuance.issue_batch(rt, [
                    (d, csr.public_bytes(serialization.Encoding.PEM))
                    for d, (_, csr) in zip(chunk, made, strict=True)])
                for d, (key, _), record in zip(chunk, made, records, strict=True):
                    pem = key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
                    pem += ssl.DER_cert_to_PEM_cert(record.der)
                    renewal = make_csr(d)[1]
                    fh.write(json.dumps({"id": d, "pem": pem,
                                         "body": est_body(renewal).decode()}) + "\n")
        timings["issue_and_keys_s"] = time.perf_counter() - t0
    finally:
        rt.close()
    return timings


def probe_targets(n: int, token: str, authz_rate: float, crl_rate: float
                  ) -> list[dict[str, Any]]:
    """Decisions for random fleet devices (own and other devices' topics, own and wildcard
    subscriptions; as bench/authz_bench.py) and the CRL, each at a fixed rate."""
    rnd = random.Random(5)
    bodies = []
    for _ in range(5000):
        d = f"storm-{rnd.randrange(n):06d}"
        kind = rnd.random()
        if kind < 0.5:
            body = {"device": d, "action": "publish", "resource": f"devices/{d}/telemetry"}
        elif kind < 0.7:
            body = {"device": d, "action": "publish",
                    "resource": f"devices/storm-{rnd.randrange(n):06d}/x"}
        elif kind < 0.9:
            body = {"device": d, "action": "subscribe", "resource": f"commands/{d}/#"}
        else:
            body = {"device": d, "action": "subscribe", "resource": "devices/+/telemetry"}
        bodies.append(json.dumps(body))
    auth = {"Authorization": f"Bearer {token}"}
    return [
        {"name": "authz_check", "method": "POST", "path": "/v1/authz/check",
         "headers": {**auth, "Content-Type": "application/json"}, "bodies": bodies,
         "rate": authz_rate, "connections": max(1, min(20, round(authz_rate / 20)))},
        {"name": "crl", "method": "GET", "path": "/crl", "headers": auth,
         "rate": crl_rate, "connections": max(1, min(5, round(crl_rate / 10)))},
    ]


def window(samples: list[list[float]], start: float, end: float) -> dict[str, float]:
    """Statistics of the requests scheduled in [start, end)."""
    inside = [s for s in samples if start <= s[0] < end]
    errors = sum(1 for s in inside if not 200 <= s[2] < 300)
    return {"requests": len(inside), "errors": errors,
            **percentiles([s[1] for s in inside])}


def check_storm(home: Path, result: dict[str, Any], issuing: x509.Certificate,
                report: Report) -> None:
    for sample in result["samples"]:
        cert = read_pkcs7_body(base64.b64decode(sample["body"]))[0]
        cert.verify_directly_issued_by(issuing)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        if cn != sample["id"]:
            raise AssertionError(f"re-enrolment of {sample['id']} named {cn!r}")
    rt = open_runtime(home_settings(home))
    try:
        c = models.certificates.c
        with rt.engine.connect() as conn:
            replaced = conn.execute(select(func.count()).select_from(models.certificates)
                                    .where(c.replaced_by.is_not(None))).scalar_one()
            device_certs = conn.execute(select(func.count()).select_from(models.certificates)
                                        .where(c.kind == "device")).scalar_one()
    finally:
        rt.close()
    ok = result["ok"]
    report.check(f"sample re-enrolment answers are certs-only PKCS#7 of a certificate from "
                 f"the issuing CA naming the same device; the store holds {replaced:,} "
                 f"superseded certificates and {device_certs:,} device certificates for "
                 f"{ok:,} answered re-enrolments"
                 + ("" if replaced == ok else ": MISMATCH"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 devices, 5 s baseline")
    parser.add_argument("--devices", type=int, help="devices that re-enrol (default 100,000)")
    parser.add_argument("--storm-connections", type=int, default=32,
                        help="concurrent re-enrolments (default 32)")
    parser.add_argument("--authz-rate", type=float, default=200,
                        help="decisions per second during baseline and storm (default 200)")
    parser.add_argument("--crl-rate", type=float, default=20,
                        help="CRL fetches per second (default 20)")
    parser.add_argument("--baseline", type=float, help="seconds of baseline (default 30)")
    parser.add_argument("--grace", type=int, default=None, metavar="SECONDS",
                        help="IOTSEC_RENEW_GRACE for the server (default: the server's, one "
                             "day); 0 puts every superseded certificate on the CRL at once")
    add_database_argument(parser)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write JSON")
    args = parser.parse_args()
    return on_store(args.database_url, "iotsec_storm", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    n = args.devices or (2_000 if args.quick else 100_000)
    baseline = args.baseline or (5.0 if args.quick else 30.0)

    machine = machine_info()
    print_machine(machine)
    report = Report("Renewal storm: decisions and CRL answered during a re-enrolment storm",
                    params={"devices": n, "storm connections": args.storm_connections,
                            "decision rate (offered)": args.authz_rate,
                            "CRL rate (offered)": args.crl_rate,
                            "baseline seconds": baseline,
                            "store": "PostgreSQL" if os.environ.get("IOTSEC_DATABASE_URL")
                            else "SQLite",
                            "IOTSEC_RENEW_GRACE": "server default" if args.grace is None
                            else args.grace,
                            "load average at start": load_average()})

    with scratch_dir("iotsec-bench-storm-", args.keep) as work:
        home = work / "home"
        extra = {} if args.grace is None else {"IOTSEC_RENEW_GRACE": str(args.grace)}
        env = home_env(home, **extra)
        token = json.loads(iotsec(env, "init", "--store-passphrase", "--key-type", "ecdsa-p256", "--json")
                           )["admin_token"]
        fleet = work / "fleet.jsonl"
        t0 = time.perf_counter()
        timings = prepare_fleet(home, n, fleet)
        print(f"# {n:,} devices registered and issued certificates in "
              f"{time.perf_counter() - t0:.1f} s ({timings})", flush=True)
        report.params["setup"] = {k: round(v, 1) for k, v in timings.items()}
        chain = work / "chain.pem"
        iotsec(env, "ca", "chain", "-o", str(chain))
        issuing = x509.load_pem_x509_certificates(chain.read_bytes())[0]
        targets_file = work / "probe.json"
        targets_file.write_text(json.dumps(probe_targets(n, token, args.authz_rate,
                                                         args.crl_rate)))

        api, est = free_port(), free_port()
        server = Server("iotsec serve", [iotsec_command(), "serve", "--http", "--port",
                                         str(api), "--est-port", str(est)], env,
                        work / "serve.log")
        probe: subprocess.Popen[bytes] | None = None
        try:
            server.start()
            server.wait_http(api)
            server.wait_tls(est, chain)
            samples_file = work / "probe-samples.json"
            probe = subprocess.Popen([sys.executable, str(LOAD), "probe", "--port", str(api),
                                      "--targets", str(targets_file), "--out",
                                      str(samples_file)], stderr=subprocess.PIPE)
            probe_start = time.monotonic()
            time.sleep(baseline + 2)
            cpu0 = server.cpu()
            storm = run_load("storm", "--port", str(est), "--cafile", str(chain),
                             "--devices", str(fleet), "--connections",
                             str(args.storm_connections))
            storm["server_cpu_s"] = server.cpu() - cpu0
            time.sleep(1)
            probe.send_signal(signal.SIGTERM)
            _, err = probe.communicate(timeout=120)
            if probe.returncode != 0:
                raise RuntimeError(f"probe failed: {err.decode()[-3000:]}")
        finally:
            if probe is not None and probe.poll() is None:
                probe.kill()
                probe.wait()
            server.stop()
        samples: dict[str, list[list[float]]] = json.loads(samples_file.read_text())
        check_storm(home, storm, issuing, report)

    if storm["ok"] != n:
        report.check(f"storm: {storm['ok']:,} of {n:,} re-enrolments answered 200 "
                     f"({storm['statuses']}; {storm['failures'][:3]})")
    # Baseline: from 2 s after the probe started (connections open, caches warm) to the
    # storm's first request; storm: its first request to its last answer.
    before = {k: window(v, probe_start + 2, storm["start"]) for k, v in samples.items()}
    during = {k: window(v, storm["start"], storm["end"]) for k, v in samples.items()}
    report.add("storm: re-enrolments over mutual TLS", storm["rate"], "per s",
               f"{storm['ok']:,} in {storm['seconds']:.1f} s; each p50 "
               f"{storm['p50_ms']:.0f} ms, p99 {storm['p99_ms']:.0f} ms; server "
               f"{storm['server_cpu_s'] / max(storm['ok'], 1) * 1000:.2f} ms CPU each "
               f"({storm['server_cpu_s'] / storm['seconds']:.2f} cores busy); client CPU "
               f"{storm['client_cpu_s'] / max(storm['ok'], 1) * 1000:.2f} ms each")
    names = {"authz_check": "POST /v1/authz/check", "crl": "GET /crl"}
    for key, label in names.items():
        d, b = during[key], before[key]
        report.add(f"{label} p99 during the storm", d["p99_ms"], "ms",
                   f"goal < {GOAL_P99_MS:.0f} ms: "
                   f"{verdict(d['p99_ms'] < GOAL_P99_MS and d['errors'] == 0)}; p50 "
                   f"{d['p50_ms']:.1f} ms, max {d['max_ms']:.0f} ms, {d['requests']:,} "
                   f"requests, {d['errors']} errors")
        report.add(f"{label} p99 baseline (no storm, same server)", b["p99_ms"], "ms",
                   f"p50 {b['p50_ms']:.1f} ms, max {b['max_ms']:.0f} ms, "
                   f"{b['requests']:,} requests, {b['errors']} errors")
        report.add(f"{label} p99 ratio storm / baseline", d["p99_ms"] / b["p99_ms"], "x")
    report.params["load average at end"] = load_average()
    report.params["probe, ms"] = {
        phase: {k: {m: round(v, 1) for m, v in stats.items()} for k, stats in found.items()}
        for phase, found in (("baseline", before), ("storm", during))}
    report.print()
    report.write_json(args.json, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
