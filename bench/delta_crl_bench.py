"""A delta CRL after 1,000 revocations on a 1,000,000-entry base (issue 16).

Goal: the delta CRL built in under 50 ms and under 100 KB.

1. Seed a throw-away iotsec home (SQLite) with N revoked certificate rows, as
   ``crl_bench.py`` does (random serials, revocation times over the past year, entries
   from ``encode_entry``), and one device ``bench-dev`` holding one real certificate and
   R - 1 more unrevoked certificate rows.
2. The runtime's clock stands at T0, half an hour ago: publish the complete CRL
   (``current_crl``, N entries, with freshestCRL) and the first delta
   (``current_delta_crl``: empty, its base is that complete CRL).
3. At T0 + 60 s, ``revoke_device(rt, "bench-dev", keyCompromise)``: R revocations through
   the service, which mark the delta stale.
4. Ours: ``current_delta_crl(rt)`` (the rebuild the revocations asked for), then rounds of
   ``current_delta_crl(rt, force=True)``; each lock the CA's CRL row, range-scan the
   revocations since the base, sign, store. Timed in this process.
5. Reference, same run, interleaved: ``openssl ca -gencrl`` over an ``index.txt`` holding the
   same R revocations (same serials, date and reason), signed by the same issuing CA key,
   with the same CRL extensions (AKI, CRL number, deltaCRLIndicator): the same delta CRL.
6. Checks: pyca/cryptography reads both (R entries, valid signature, deltaCRLIndicator
   naming the base); ``openssl crl -text`` shows the indicator; and
   ``openssl verify -crl_check -use_deltas -extended_crl`` with the base and our delta says
   the real certificate is revoked, while with the base alone it says OK.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import insert

from common import (
    Report,
    issuing_private_key,
    load_average,
    machine_info,
    print_machine,
    run_child,
    scratch_dir,
    settings_for,
    verdict,
)
from crl_bench import openssl_time, seed_store
from iotsec.app.identity import devices
from iotsec.app.pki import crl, issuance
from iotsec.app.pki.revocation import revoke_device
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.pki.crl import RevocationReason
from iotsec.pki.serial import format_serial, random_serial
from iotsec.store import models

GOAL_MS = 50.0
GOAL_KB = 100.0
CRL_URL = "http://pki.example.com/crl"


class Clock:
    """The runtime's clock, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def add_bench_device(rt: Runtime, count: int, now: int) -> x509.Certificate:
    """``bench-dev`` with one real certificate and ``count - 1`` more certificate rows."""
    devices.add_device(rt, devices.NewDevice.parse("bench-dev"))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-dev")]))
           .sign(key, hashes.SHA256()))
    record = issuance.issue_from_csr(rt, "bench-dev",
                                     csr.public_bytes(serialization.Encoding.DER))
    rows: list[dict[str, Any]] = []
    for n in range(count - 1):
        serial = format_serial(random_serial())
        rows.append({
            "serial": serial, "authority_id": rt.issuing_id(), "device_id": "bench-dev",
            "kind": "device", "profile": "device", "subject": "bench-dev",
            "not_before": now - 86400, "not_after": now + 300 * 86400,
            "sha256": hashlib.sha256(f"bench-{n}-{serial}".encode()).hexdigest(),
            "der": record.der, "created_at": now - 86400, "revoked_at": None,
            "revocation_reason": None, "crl_entry": None, "replaced_by": None,
            "spki_sha256": None, "crl_partition": None})
    with rt.engine.begin() as conn:
        conn.execute(insert(models.certificates), rows)
    return x509.load_der_x509_certificate(record.der)


OPENSSL_CA_CONF = """\
[ ca ]
default_ca = bench_ca

[ bench_ca ]
dir = {dir}
database = $dir/index.txt
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
default_crl_hours = 24
crl_extensions = crl_ext
policy = policy_any

[ policy_any ]
commonName = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always
# deltaCRLIndicator (RFC 5280 5.2.4), critical, BaseCRLNumber = the base's number
2.5.29.27 = critical,ASN1:INTEGER:{base}
"""


def prepare_openssl_ca(directory: Path, rt: Runtime, serials: Sequence[str], revoked_at: int,
                       not_after: int, base: int, number: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ca = rt.authority("issuing")
    (directory / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "ca.key"
    key_file.write_bytes(issuing_private_key(rt).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key_file.chmod(0o600)
    (directory / "crlnumber").write_text(f"{number:X}\n".rjust(3, "0"))
    (directory / "serial").write_text("01\n")
    with (directory / "index.txt").open("w") as fh:
        for n, serial in enumerate(serials):
            fh.write(f"R\t{openssl_time(not_after)}\t{openssl_time(revoked_at)},keyCompromise"
                     f"\t{serial}\tunknown\t/CN=dev{n}\n")
    config = directory / "ca.cnf"
    config.write_text(OPENSSL_CA_CONF.format(dir=directory, base=base))
    return config


def check_delta(der: bytes, ca_cert: x509.Certificate, count: int, base: int,
                label: str, report: Report) -> None:
    parsed = x509.load_der_x509_crl(der)
    if len(parsed) != count:
        raise AssertionError(f"{label}: {len(parsed)} entries, {count} expected")
    if not parsed.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise AssertionError(f"{label}: the signature does not verify")
    indicator = parsed.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    if not indicator.critical or indicator.value.crl_number != base:
        raise AssertionError(f"{label}: deltaCRLIndicator is not a critical {base}")
    report.check(f"{label}: {len(der):,} bytes DER, {len(parsed):,} entries (pyca/"
                 f"cryptography), signature valid, critical deltaCRLIndicator = {base}")


def openssl(*args: str | Path) -> str:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=600)
    return proc.stdout + proc.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000,
                        help="revoked certificates on the base (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 on the base")
    parser.add_argument("--revocations", type=int, default=1_000,
                        help="revocations after the base (default 1,000)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the dates")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else args.count
    revocations = args.revocations

    machine = machine_info()
    print_machine(machine)
    report = Report(f"Delta CRL: {revocations:,} revocations on a {count:,}-entry base", params={
        "revoked certificates on the base": count, "revocations after the base": revocations,
        "rounds (median time)": args.rounds, "CA key": "P-256 (issuing CA), ECDSA-SHA256",
        "store": "SQLite file in a scratch home; each seeded row holds 16 placeholder bytes "
        "as its DER", "load average at start": load_average()})

    with scratch_dir("iotsec-bench-delta-", keep=args.keep) as tmp:
        home = tmp / "home"
        settings = settings_for(home)
        settings.crl_url = CRL_URL
        start_clock = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
        init_home(settings, now=start_clock - timedelta(minutes=5), store_passphrase=True)
        clock = Clock(start_clock)
        rt = open_runtime(settings, clock=clock)
        start = time.perf_counter()
        seed_store(rt, count, args.seed, small_der=True)
        real = add_bench_device(rt, revocations, int(time.time()))
        report.params["seeding"] = f"{time.perf_counter() - start:.0f} s"

        start = time.perf_counter()
        base = crl.current_crl(rt, force=True)
        base_seconds = time.perf_counter() - start
        first = crl.current_delta_crl(rt)
        if first.base_number != base.number or len(x509.load_der_x509_crl(first.der)) != 0:
            raise AssertionError("the first delta is not an empty delta of the base")
        report.add("context: the base, current_crl(force=True)", base_seconds, "s",
                   f"{len(base.der) / 1e6:.1f} MB, number {base.number}")

        clock.now = start_clock + timedelta(seconds=60)
        start = time.perf_counter()
        revoked = revoke_device(rt, "bench-dev", RevocationReason.keyCompromise)
        report.add(f"context: revoke_device, {len(revoked):,} certificates, one transaction",
                   time.perf_counter() - start, "s")
        if len(revoked) != revocations:
            raise AssertionError(f"{len(revoked)} revoked, {revocations} expected")

        start = time.perf_counter()
        delta = crl.current_delta_crl(rt)
        stale_ms = (time.perf_counter() - start) * 1000
        if delta.base_number != base.number:
            raise AssertionError("the delta does not complete the base")

        config = prepare_openssl_ca(tmp / "openssl-ca", rt, revoked, int(clock.now.timestamp()),
                                    int(time.time()) + 300 * 86400, base.number,
                                    delta.number + 10_000)
        ours_ms: list[float] = []
        ref: list[tuple[float, float]] = []
        ref_pem = tmp / "openssl-delta.pem"
        for r in range(args.rounds):
            start = time.perf_counter()
            delta = crl.current_delta_crl(rt, force=True)
            ours_ms.append((time.perf_counter() - start) * 1000)
            run = run_child(["openssl", "ca", "-gencrl", "-batch", "-config", str(config),
                             "-out", str(ref_pem)])
            if run.returncode != 0:
                raise RuntimeError(f"openssl ca -gencrl failed: {run.stderr[-2000:]}")
            ref.append((run.seconds * 1000, run.cpu_seconds * 1000))
            print(f"# round {r + 1}: ours {ours_ms[-1]:.1f} ms, openssl ca -gencrl "
                  f"{run.seconds * 1000:.1f} ms", flush=True)

        ca_cert = rt.authority("issuing").certificate
        check_delta(delta.der, ca_cert, revocations, base.number, "ours", report)
        ref_der = x509.load_pem_x509_crl(ref_pem.read_bytes()).public_bytes(
            serialization.Encoding.DER)
        check_delta(ref_der, ca_cert, revocations, base.number, "openssl ca -gencrl", report)
        files = {}
        for name, der in (("base", base.der), ("delta", delta.der)):
            files[name] = tmp / f"{name}.pem"
            files[name].write_bytes(x509.load_der_x509_crl(der).public_bytes(
                serialization.Encoding.PEM))
        text = openssl("crl", "-in", files["delta"], "-noout", "-text")
        if "Delta CRL Indicator: critical" not in text:
            raise AssertionError(f"openssl crl -text: {text[:2000]}")
        chain = tmp / "root.pem"
        chain.write_bytes(rt.authority("root").certificate.public_bytes(
            serialization.Encoding.PEM))
        issuing = tmp / "issuing.pem"
        issuing.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        leaf = tmp / "leaf.pem"
        leaf.write_bytes(real.public_bytes(serialization.Encoding.PEM))
        common = ["-CAfile", chain, "-untrusted", issuing, leaf]
        alone = openssl("verify", "-crl_check", "-CRLfile", files["base"], *common)
        both = openssl("verify", "-crl_check", "-use_deltas", "-extended_crl", "-CRLfile",
                       files["base"], "-CRLfile", files["delta"], *common)
        if not alone.strip().endswith(": OK") or "certificate revoked" not in both:
            raise AssertionError(f"openssl verify: base alone {alone!r}, with delta {both!r}")
        report.check("`openssl crl -text` shows `Delta CRL Indicator: critical`; `openssl "
                     "verify -crl_check` with the base alone: OK; with `-use_deltas "
                     "-extended_crl` and the delta: certificate revoked")
        rt.close()

    t = statistics.median(ours_ms)
    r_time = statistics.median(w for w, _ in ref)
    r_cpu = statistics.median(c for _, c in ref)
    kb = len(delta.der) / 1000
    report.add("ours: current_delta_crl after the revocations (stale)", stale_ms, "ms")
    report.add("ours: current_delta_crl(force=True), median", t, "ms",
               f"goal < {GOAL_MS:g} ms: {verdict(t < GOAL_MS)}; best {min(ours_ms):.1f} ms")
    report.add("ours: delta CRL size", kb, "KB",
               f"goal < {GOAL_KB:g} KB: {verdict(kb < GOAL_KB)}")
    report.add("reference: openssl ca -gencrl, whole process, median", r_time, "ms",
               f"CPU {r_cpu:.1f} ms; best {min(w for w, _ in ref):.1f} ms")
    report.add("reference: its delta CRL size", len(ref_der) / 1000, "KB")
    report.add("ratio time: ours call / openssl process", t / r_time, "x", "below 1 = faster")
    report.params["load average at end"] = load_average()
    report.params["ours rounds (ms)"] = [round(x, 1) for x in ours_ms]
    report.print()
    report.write_json(args.json, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
