"""Goal 2: a full CRL over 1,000,000 revoked certificates.

Goal: built and signed in at most 3 s, under 400 MB peak memory.

1. Seed a throw-away iotsec home (SQLite) with N revoked certificate rows, inserted
   directly with SQLAlchemy Core in chunks (random 159-bit serials, revocation times spread
   over the past year, each row's ``crl_entry`` encoded by ``iotsec.pki.crl.encode_entry``,
   and the DER of a real issued certificate in ``der`` so rows have their real size).
2. Ours: ``iotsec.app.pki.crl.current_crl(rt, force=True)`` in a fresh child process
   (``crl_bench.py --build-only HOME``). The call is timed inside the child; the child's
   whole peak RSS is read with ``wait4`` (per-child rusage); its RSS just before the call is
   reported for context. The CRL is checked with pyca/cryptography (entry count, signature
   against the issuing CA) and ``openssl crl``.
3. Reference, same run: ``openssl ca -gencrl`` in a minimal OpenSSL CA directory over an
   ``index.txt`` holding the same N revocations (same serials, dates and reason), signed by
   the same issuing CA key; wall time and peak RSS of the process.

Rounds are interleaved (ours, openssl, ours, ...); the median time and the largest peak
are reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, insert, select

from common import (
    Report,
    issuing_private_key,
    load_average,
    machine_info,
    peak_rss_self_mib,
    print_machine,
    rss_now_mib,
    run_child,
    scratch_dir,
    settings_for,
    verdict,
)
from iotsec.app.identity import devices
from iotsec.app.pki import crl, issuance
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.pki.serial import format_serial, random_serial
from iotsec.store import models
from iotsec.timeutil import from_ts

GOAL_SECONDS = 3.0
GOAL_PEAK_MB = 400.0
CHUNK = 50_000
HERE = Path(__file__).resolve().parent


def mb(mib: float) -> float:
    """MiB (what the kernel reports) to MB (10^6 bytes, as the goal is written)."""
    return mib * 1024 * 1024 / 1e6


# --------------------------------------------------------------------------- seeding


def sample_der(rt: Runtime) -> bytes:
    """The DER of one real device certificate, so that seeded rows have a realistic size."""
    devices.add_device(rt, devices.NewDevice.parse("sample-device"))
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sample-device")]))
           .sign(key, hashes.SHA256()))
    record = issuance.issue_from_csr(rt, "sample-device",
                                     csr.public_bytes(serialization.Encoding.DER))
    return record.der


def revocations(count: int, now: int, seed: int) -> Iterator[tuple[int, int, int]]:
    """``(serial, revoked_at, not_after)``: random serials, revocation times spread over the
    past year, expiries in the coming year (so every entry belongs on the CRL)."""
    rng = random.Random(seed)
    seen: set[int] = set()
    while len(seen) < count:
        serial = random_serial()
        if serial in seen:
            continue
        seen.add(serial)
        yield (serial, now - rng.randrange(3600, 365 * 86400),
               now + rng.randrange(3600, 365 * 86400))


def seed_store(rt: Runtime, count: int, seed: int,
               small_der: bool = False) -> list[tuple[int, int, int]]:
    """Insert ``count`` revoked certificate rows; return them for the openssl index."""
    authority_id = rt.issuing_id()
    der = bytes(16) if small_der else sample_der(rt)
    now = int(time.time())
    reason = RevocationReason.keyCompromise
    rows = list(revocations(count, now, seed))
    start = time.perf_counter()
    for i in range(0, count, CHUNK):
        chunk: list[dict[str, Any]] = []
        for n, (serial, revoked_at, not_after) in enumerate(rows[i:i + CHUNK], start=i):
            hex_serial = format_serial(serial)
            chunk.append({
                "serial": hex_serial, "authority_id": authority_id, "device_id": None,
                "kind": "device", "profile": "device", "subject": f"dev{n}",
                "not_before": not_after - 365 * 86400, "not_after": not_after,
                "sha256": hashlib.sha256(hex_serial.encode()).hexdigest(), "der": der,
                "created_at": not_after - 365 * 86400, "revoked_at": revoked_at,
                "revocation_reason": int(reason),
                "crl_entry": encode_entry(serial, from_ts(revoked_at), reason),
                "replaced_by": None,
            })
        with rt.engine.begin() as conn:
            conn.execute(insert(models.certificates), chunk)
        done = min(i + CHUNK, count)
        if done % (10 * CHUNK) == 0 or done == count:
            print(f"# seeded {done:,} rows ({done / (time.perf_counter() - start):,.0f} rows/s)",
                  flush=True)
    return rows


# --------------------------------------------------------------------------- ours (child)


def build_only(home: Path, out: Path) -> int:
    """Child mode: open the home, then time ``current_crl(force=True)``; print JSON."""
    rt = open_runtime(settings_for(home))
    rss_before = rss_now_mib()
    peak_before = peak_rss_self_mib()
    start, start_cpu = time.perf_counter(), time.process_time()
    published = crl.current_crl(rt, force=True)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - start_cpu
    peak_after = peak_rss_self_mib()
    out.write_bytes(published.der)
    rt.close()
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds,
                      "rss_before_mib": rss_before,
                      "peak_before_mib": peak_before, "peak_self_mib": peak_after,
                      "number": published.number, "bytes": len(published.der)}))
    return 0


# --------------------------------------------------------------------------- reference


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
default_crl_days = 7
crl_extensions = crl_ext
policy = policy_any

[ policy_any ]
commonName = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""


def openssl_time(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%y%m%d%H%M%SZ")


def prepare_openssl_ca(directory: Path, ca_cert: x509.Certificate,
                       ca_key: ec.EllipticCurvePrivateKey,
                       rows: Sequence[tuple[int, int, int]]) -> Path:
    """A minimal OpenSSL CA directory whose index.txt revokes the same certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "ca.key"
    key_file.write_bytes(ca_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    key_file.chmod(0o600)
    (directory / "crlnumber").write_text("1000\n")
    (directory / "serial").write_text("01\n")
    with (directory / "index.txt").open("w") as fh:
        for n, (serial, revoked_at, not_after) in enumerate(rows):
            fh.write(f"R\t{openssl_time(not_after)}\t{openssl_time(revoked_at)},keyCompromise\t"
                     f"{format_serial(serial)}\tunknown\t/CN=dev{n}\n")
    config = directory / "ca.cnf"
    config.write_text(OPENSSL_CA_CONF.format(dir=directory))
    return config


def run_openssl_ca(config: Path, out: Path) -> tuple[float, float, float]:
    """Wall time, CPU time and peak RSS (MiB) of one ``openssl ca -gencrl`` process."""
    run = run_child(["openssl", "ca", "-gencrl", "-batch", "-config", str(config),
                     "-out", str(out)])
    if run.returncode != 0:
        raise RuntimeError(f"openssl ca -gencrl failed: {run.stderr.strip()[-2000:]}")
    return run.seconds, run.cpu_seconds, run.peak_rss_mib


# --------------------------------------------------------------------------- checks


def check_crl(der: bytes, ca_cert: x509.Certificate, count: int, sample: dict[int, datetime],
              label: str, report: Report) -> None:
    parsed = x509.load_der_x509_crl(der)
    if len(parsed) != count:
        raise AssertionError(f"{label}: {len(parsed)} entries, {count} expected")
    if not parsed.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise AssertionError(f"{label}: the CRL signature does not verify")
    if parsed.issuer != ca_cert.subject:
        raise AssertionError(f"{label}: wrong issuer")
    for serial, when in sample.items():
        entry = parsed.get_revoked_certificate_by_serial_number(serial)
        if entry is None or entry.revocation_date_utc != when:
            raise AssertionError(f"{label}: entry {serial:X} is missing or has the wrong date")
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        if reason is not x509.ReasonFlags.key_compromise:
            raise AssertionError(f"{label}: entry {serial:X} has reason {reason}")
    report.check(f"{label}: {len(der) / 1e6:.1f} MB DER, {len(parsed):,} entries "
                 "(pyca/cryptography), signature valid against the issuing CA, "
                 f"{len(sample)} sampled entries have the right date and reason")


def check_with_openssl(path: Path, ca_file: Path, label: str, report: Report) -> None:
    # openssl crl -inform DER -noout -text | head -n 12  (openssl parses the whole CRL first)
    proc = subprocess.Popen(["openssl", "crl", "-inform", "DER", "-in", str(path), "-noout",
                             "-text"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().rstrip("\n") for _ in range(12)]
    proc.kill()
    _, errors = proc.communicate()
    if "Certificate Revocation List" not in lines[0]:
        raise AssertionError(f"{label}: openssl crl -text did not parse it: {errors}")
    verify = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(path), "-noout",
                             "-CAfile", str(ca_file)], capture_output=True, text=True, check=False)
    if "verify OK" not in verify.stdout + verify.stderr:
        raise AssertionError(f"{label}: openssl crl -CAfile did not verify: {verify.stderr}")
    numbers = [ln.strip() for ln in lines if "Last Update" in ln or "Next Update" in ln]
    report.check(f"{label}: `openssl crl -inform DER -noout -text | head` parses it "
                 f"({'; '.join(numbers)}); `openssl crl -CAfile` says verify OK")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 entries instead of 1M")
    parser.add_argument("--count", type=int, help="revoked certificates (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--no-openssl", action="store_true", help="skip the openssl reference")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the dates")
    parser.add_argument("--small-der", action="store_true",
                        help="store 16 placeholder bytes as each row's DER instead of a real "
                        "certificate's (smaller rows, a smaller database)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--build-only", type=Path, metavar="HOME",
                        help="(internal) child mode: build the CRL of this seeded home")
    parser.add_argument("--out", type=Path, help="(internal) where --build-only writes the CRL")
    args = parser.parse_args(argv)
    if args.build_only is not None:
        return build_only(args.build_only, args.out or Path("crl.der"))
    count = args.count or (100_000 if args.quick else 1_000_000)

    machine = machine_info()
    print_machine(machine)
    report = Report(f"Goal 2: full CRL over {count:,} revoked certificates", params={
        "revoked certificates": count, "rounds (median time, largest peak)": args.rounds,
        "CA key": "P-256 (issuing CA), ECDSA-SHA256 signature",
        "store": "SQLite file in a scratch home (page cache warm after seeding)",
        "certificates.der of each seeded row": "16 placeholder bytes" if args.small_der
        else "the DER of a real device certificate",
        "load average at start": load_average()})

    with scratch_dir("iotsec-bench-crl-", keep=args.keep) as tmp:
        home = tmp / "home"
        init_home(settings_for(home), store_passphrase=True)
        rt = open_runtime(settings_for(home))
        ca = rt.authority("issuing")
        ca_key = issuing_private_key(rt)
        root_cert = rt.authority("root").certificate
        start = time.perf_counter()
        rows = seed_store(rt, count, args.seed, args.small_der)
        seed_seconds = time.perf_counter() - start
        with rt.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(models.certificates)).scalar()
        rt.close()
        report.params["seeding"] = (f"{stored:,} certificate rows in {seed_seconds:.0f} s; "
                                    f"database {(home / 'iotsec.db').stat().st_size / 1e6:,.0f}"
                                    " MB")
        rng = random.Random(args.seed + 1)
        sample = {s: from_ts(r) for s, r, _ in rng.sample(rows, 20)}
        ca_file = tmp / "chain.pem"
        ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM)
                            + root_cert.public_bytes(serialization.Encoding.PEM))

        config = None
        if not args.no_openssl:
            start = time.perf_counter()
            config = prepare_openssl_ca(tmp / "openssl-ca", ca.certificate, ca_key, rows)
            print(f"# wrote the openssl CA directory in {time.perf_counter() - start:.0f} s",
                  flush=True)
        del rows

        ours: list[dict[str, Any]] = []
        ref: list[tuple[float, float, float]] = []
        ours_der = tmp / "ours.crl.der"
        ref_pem = tmp / "openssl.crl.pem"
        for r in range(args.rounds):
            child = run_child([sys.executable, str(HERE / "crl_bench.py"), "--build-only",
                               str(home), "--out", str(ours_der)])
            if child.returncode != 0:
                raise RuntimeError(f"the build child failed:\n{child.stderr[-4000:]}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            result["process_seconds"] = child.seconds
            result["process_cpu_seconds"] = child.cpu_seconds
            result["peak_rss_mib"] = child.peak_rss_mib
            ours.append(result)
            print(f"# round {r + 1}: ours    current_crl {result['seconds']:.2f} s "
                  f"(process {child.seconds:.2f} s), peak RSS {mb(child.peak_rss_mib):.0f} MB",
                  flush=True)
            if config is not None:
                seconds, cpu_seconds, peak = run_openssl_ca(config, ref_pem)
                ref.append((seconds, cpu_seconds, peak))
                print(f"# round {r + 1}: openssl ca -gencrl {seconds:.2f} s, "
                      f"peak RSS {mb(peak):.0f} MB", flush=True)

        check_crl(ours_der.read_bytes(), ca.certificate, count, sample, "ours", report)
        check_with_openssl(ours_der, ca_file, "ours", report)
        if ref:
            ref_der = x509.load_pem_x509_crl(ref_pem.read_bytes()).public_bytes(
                serialization.Encoding.DER)
            check_crl(ref_der, ca.certificate, count, sample, "openssl ca -gencrl", report)

    t_call = statistics.median(o["seconds"] for o in ours)
    t_proc = statistics.median(o["process_seconds"] for o in ours)
    cpu_call = statistics.median(o["cpu_seconds"] for o in ours)
    cpu_proc = statistics.median(o["process_cpu_seconds"] for o in ours)
    peak = max(mb(o["peak_rss_mib"]) for o in ours)
    before = statistics.median(mb(o["rss_before_mib"]) for o in ours)
    best_call = min(o["seconds"] for o in ours)
    report.add("ours: current_crl(force=True), the call", t_call, "s",
               f"goal <= {GOAL_SECONDS:g} s: {verdict(t_call <= GOAL_SECONDS)}; best round "
               f"{best_call:.2f} s; CPU {cpu_call:.2f} s")
    report.add("ours: whole child process (start, imports, open, build, write)", t_proc, "s",
               f"CPU {cpu_proc:.2f} s")
    report.add("ours: peak RSS of the child process", peak, "MB",
               f"goal < {GOAL_PEAK_MB:g} MB: {verdict(peak < GOAL_PEAK_MB)}; largest of the rounds")
    report.add("ours: RSS just before the call (context)", before, "MB")
    report.add("ours: growth of peak RSS during the call", peak - before, "MB")
    if ref:
        r_time = statistics.median(t for t, _, _ in ref)
        r_cpu = statistics.median(c for _, c, _ in ref)
        r_peak = max(mb(p) for _, _, p in ref)
        report.add("reference: openssl ca -gencrl (whole process)", r_time, "s",
                   f"best round {min(t for t, _, _ in ref):.2f} s; CPU {r_cpu:.2f} s")
        report.add("reference: peak RSS of openssl ca -gencrl", r_peak, "MB")
        report.add("ratio time: ours call / openssl process", t_call / r_time, "x",
                   f"below 1 = faster; by CPU time {cpu_call / r_cpu:.3f}")
        report.add("ratio time: ours process / openssl process", t_proc / r_time, "x",
                   f"below 1 = faster; by CPU time {cpu_proc / r_cpu:.3f}")
        report.add("ratio peak RSS: ours / openssl", peak / r_peak, "x", "below 1 = smaller")
        report.params["openssl rounds (s, MB)"] = [(round(t, 2), round(mb(p)))
                                                   for t, _, p in ref]
    report.params["load average at end"] = load_average()
    report.params["ours rounds (call s, process s, peak MB)"] = [
        (round(o["seconds"], 2), round(o["process_seconds"], 2), round(mb(o["peak_rss_mib"])))
        for o in ours]
    report.print()
    report.write_json(args.json, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
