"""Fleet audit goal: ``iotsec audit`` over 100,000 devices and certificates in < 10 s.

Setup (not timed): a fresh home with N active devices (rows inserted directly, in batches)
and one valid certificate each, every one with its own EC P-256 key (real keys: each
certificate's SubjectPublicKeyInfo is a freshly generated key spliced into a certificate
issued by the home's CA; the signature is the template's, which neither the audit nor the
references verify). To give every check real work: 1 % of the certificates expire within
30 days, 0.5 % were issued more than 398 days ago, 10 % of the devices also hold an older,
revoked certificate, every device connected once in the last 24 h (N ``broker.connect``
events), 0.1 % had a client-id collision, 5 devices share one key, and 100 devices hold a
registered token key.

Ours: ``iotsec.app.audit.run_audit`` end to end (the snapshot read from the store with
set-based queries, every key read from the certificates' DER, all 18 checks), best of
R rounds; also the ``iotsec audit --json FILE`` command (a fresh process, so imports and
the report are included).

References, same run, over the same certificates (what reading each certificate's expiry
and key takes without iotsec's cheap reader):
- pyca/cryptography: ``load_der_x509_certificate`` + ``not_valid_after_utc`` +
  ``public_key()`` key size for every certificate (in process);
- ``openssl x509 -noout -checkend 2592000`` per certificate (one process each, as a shell
  loop would run it): timed on a sample and extrapolated to N.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import create_engine, insert, text

from common import (
    Report,
    fresh_runtime,
    load_average,
    machine_info,
    print_machine,
    scratch_dir,
    verdict,
)
from iotsec.app.audit import run_audit
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.config import Settings
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import from_ts, ts

DAY = 86400
GOAL_SECONDS = 10.0
BATCH = 5000


def _splice(template: bytes, old_spki: bytes, old_serial: bytes, spki: bytes,
            serial: bytes) -> bytes:
    """The template certificate with another key and serial (same lengths, so every DER
    length stays right)."""
    assert len(spki) == len(old_spki)
    assert len(serial) == len(old_serial)
    return template.replace(old_spki, spki, 1).replace(old_serial, serial, 1)


def seed(rt: Runtime, count: int, rng: random.Random) -> dict[str, Any]:
    t0 = time.perf_counter()
    add_device(rt, NewDevice.parse("template"))
    template = issue_with_keygen(rt, "template", p12_passphrase=b"bench-only").certificate
    parsed = x509.load_der_x509_certificate(template.der)
    old_spki = parsed.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    size = parsed.serial_number.bit_length() // 8 + 1  # DER content length of the INTEGER
    old_serial = parsed.serial_number.to_bytes(size, "big")
    assert old_serial in template.der
    assert old_spki in template.der
    now = ts(rt.now())
    authority = rt.issuing_id()
    shared = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    devices, certs, events, keys = [], [], [], []
    ders: list[bytes] = []
    for i in range(count):
        device = f"dev-{i:06d}"
        devices.append({"id": device, "state": "active", "attributes": "{}",
                        "created_at": now - 200 * DAY, "updated_at": now - 200 * DAY})
        spki = shared if i < 5 else ec.generate_private_key(ec.SECP256R1()).public_key() \
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        serial = rng.getrandbits(8 * size - 2) | (1 << (8 * size - 2))
        der = _splice(template.der, old_spki, old_serial, spki, serial.to_bytes(size, "big"))
        ders.append(der)
        not_before = now - 100 * DAY
        not_after = not_before + 365 * DAY
        if i % 100 == 7:
            not_after = now + 10 * DAY
        if i % 200 == 9:
            not_before, not_after = now - 400 * DAY, now + 60 * DAY
        certs.append({"serial": format_serial(serial), "authority_id": authority,
                      "device_id": device, "kind": "device", "profile": "device",
                      "subject": device, "not_before": not_before, "not_after": not_after,
                      "sha256": hashlib.sha256(der).hexdigest(), "der": der,
                      "created_at": not_before, "revoked_at": None,
                      "revocation_reason": None, "crl_entry": None, "replaced_by": None})
        if i % 10 == 3:
            old = rng.getrandbits(8 * size - 2) | (1 << (8 * size - 2))
            revoked_at = now - 100 * DAY
            old_der = _splice(template.der, old_spki, old_serial, spki, old.to_bytes(size, "big"))
            certs.append({
                "serial": format_serial(old), "authority_id": authority, "device_id": device,
                "kind": "device", "profile": "device", "subject": device,
                "not_before": now - 465 * DAY, "not_after": now - 100 * DAY + 265 * DAY,
                "sha256": hashlib.sha256(old_der).hexdigest(), "der": old_der,
                "created_at": now - 465 * DAY, "revoked_at": revoked_at,
                "revocation_reason": int(RevocationReason.superseded),
                "crl_entry": encode_entry(old, from_ts(revoked_at),
                                          RevocationReason.superseded),
                "replaced_by": format_serial(serial)})
        at = now - rng.randrange(1, DAY - 60)
        events.append({"at": at, "kind": "broker.connect", "outcome": "success",
                       "actor": device, "source": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
                       ":40000", "subject": None,
                       "detail": json.dumps({"client_id": device, "protocol": "mqtt",
                                             "options": None})})
        if i % 1000 == 11:
            events.append({"at": at + 30, "kind": "broker.collision", "outcome": "failure",
                           "actor": device, "source": "198.51.100.9:5000", "subject": None,
                           "detail": json.dumps({"previous_source": "10.0.0.1:40000"})})
        if i % 1000 == 13:
            key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            keys.append({"kid": hashlib.sha256(key).hexdigest()[:43], "device_id": device,
                         "algorithm": "ES256", "public_key_der": key, "source": "registered",
                         "created_at": now - DAY, "revoked_at": None})
    with transaction(rt.engine) as conn:
        for table, rows in ((m.devices, devices), (m.certificates, certs),
                            (m.events, events), (m.device_keys, keys)):
            for i in range(0, len(rows), BATCH):
                conn.execute(insert(table), rows[i:i + BATCH])
    return {"seconds": time.perf_counter() - t0, "certificates": len(certs),
            "events": len(events), "ders": ders}


def reference_cryptography(ders: list[bytes], now: float) -> float:
    t0 = time.perf_counter()
    weak = expiring = 0
    for der in ders:
        cert = x509.load_der_x509_certificate(der)
        if cert.not_valid_after_utc.timestamp() - now < 30 * DAY:
            expiring += 1
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
            weak += 1
    return time.perf_counter() - t0


def reference_openssl(ders: list[bytes], sample: int, work: Path) -> float:
    """Seconds per certificate for ``openssl x509 -noout -checkend`` (one process each)."""
    paths = []
    for i, der in enumerate(ders[:sample]):
        path = work / f"c{i}.der"
        path.write_bytes(der)
        paths.append(path)
    t0 = time.perf_counter()
    for path in paths:
        subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(path), "-noout",
                        "-checkend", str(30 * DAY)], capture_output=True, check=False)
    return (time.perf_counter() - t0) / len(paths)


@contextlib.contextmanager
def _runtime(database_url: str | None, keep: bool) -> Iterator[Runtime]:
    """A fresh home on SQLite, or on PostgreSQL in a schema of its own."""
    if database_url is None:
        with fresh_runtime("iotsec-bench-audit-", keep=keep) as rt:
            yield rt
        return
    schema = f"bench_audit_{secrets.token_hex(4)}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in database_url else "?"
    url = f"{database_url}{sep}options=-csearch_path%3D{schema}"
    try:
        with scratch_dir("iotsec-bench-audit-pg-", keep) as tmp:
            settings = Settings(home=tmp / "home", database_url=url)
            init_home(settings, store_passphrase=True)
            rt = open_runtime(settings)
            try:
                yield rt
            finally:
                rt.close()
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 devices")
    parser.add_argument("--count", type=int, help="devices (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--openssl-sample", type=int, default=500,
                        help="certificates timed with openssl (extrapolated to N)")
    parser.add_argument("--no-openssl", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch home")
    parser.add_argument("--database-url", metavar="URL",
                        help="run on PostgreSQL (a private schema, dropped afterwards), e.g. "
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    count = args.count or (10_000 if args.quick else 100_000)
    machine = machine_info()
    print_machine(machine)
    store = "PostgreSQL" if args.database_url else "SQLite"
    report = Report(f"Fleet audit ({store})", params={"devices": f"{count:,}",
                                                      "rounds": args.rounds,
                                                      "load average at start": load_average()})
    rng = random.Random(1)
    with _runtime(args.database_url, args.keep) as rt:
        built = seed(rt, count, rng)
        print(f"# seeded {count:,} devices, {built['certificates']:,} certificates, "
              f"{built['events']:,} events in {built['seconds']:.1f} s", flush=True)
        best = best_cpu = float("inf")
        result = None
        for _ in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            result = run_audit(rt, record=False)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        assert result is not None
        by_rule: dict[str, int] = {}
        for f in result.findings:
            by_rule[f.rule.id] = by_rule.get(f.rule.id, 0) + 1
        print(f"# findings by rule: {json.dumps(by_rule, sort_keys=True)}", flush=True)
        report.add("run_audit (best of rounds)", best, "s")
        report.add("run_audit CPU time (best of rounds)", best_cpu, "s",
                   "the machine's other load does not count here")
        home = rt.settings.resolved_home
        with tempfile.TemporaryDirectory(prefix="iotsec-bench-audit-out-") as out:
            env = {"IOTSEC_HOME": str(home), "PATH": "/usr/bin:/bin"}
            if rt.settings.database_url:
                env["IOTSEC_DATABASE_URL"] = rt.settings.database_url
            exe = shutil.which("iotsec") or str(Path(sys.executable).with_name("iotsec"))
            t0 = time.perf_counter()
            proc = subprocess.run([exe, "audit", "--json", str(Path(out) / "a.json"),
                                   "--fail-on", "never"], env=env, capture_output=True,
                                  text=True, check=False)
            command = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
            report.add("iotsec audit --json FILE (process)", command, "s")
        ders = built["ders"]
        crypto = reference_cryptography(ders, time.time())
        report.add("ref: cryptography load + expiry + key", crypto, "s")
        report.add("ratio ours / cryptography", best / crypto, "x")
        if not args.no_openssl and shutil.which("openssl"):
            with tempfile.TemporaryDirectory(prefix="iotsec-bench-audit-ossl-") as work:
                per = reference_openssl(ders, min(args.openssl_sample, len(ders)), Path(work))
            report.add("ref: openssl x509 -checkend (extrapolated)", per * len(ders), "s",
                       f"{per * 1000:.2f} ms per certificate, {args.openssl_sample} timed")
            report.add("ratio ours / openssl", best / (per * len(ders)), "x")
        report.check(f"run_audit over {count:,} devices: {best:.2f} s (goal < "
                     f"{GOAL_SECONDS:.0f} s): {verdict(best < GOAL_SECONDS)}")
    report.print()
    report.write_json(args.json, machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
