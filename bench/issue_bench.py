"""Goal 1: issuing device certificates from CSRs, store write included.

Goal: at least 3,000 certificates/s on one core through the library (SQLite store).

Measured in one run, on the same CSRs and the same issuing CA key. Every round is cut
into slices that the paths run in turn (rotating order); the median round is reported,
with the best round and the rate per CPU-second:

* ours, batch  -- ``iotsec.app.pki.issuance.issue_batch`` in batches (one transaction per batch;
  the fleet provisioning path: CSR parse + signature check, issuance, store write);
* ours, single -- ``iotsec.app.pki.issuance.issue_from_csr`` (one transaction per certificate);
* ours, PKI layer only -- ``parse_csr`` + ``issue_device`` with no store (for attribution);
* reference    -- pyca/cryptography alone: load the CSR, check its signature, build the same
  certificate with ``x509.CertificateBuilder`` and sign it; no store;
* reference 2  -- ``openssl x509 -req``, one process per certificate (per-process cost);
* ceiling      -- the cryptography alone: one CSR signature check and one ECDSA signature.
* floor        -- what one durable issuance cannot do without, in plain Python: the ceiling's
  cryptography, then one transaction per certificate with the standard library's ``sqlite3``
  on a store of the same schema and settings (a second home): the device's state read and
  activated, the key-holder read, the certificate row, and the ``key.use`` and
  ``cert.issued`` event rows chained with ``hashlib``, then the commit. No certificate is
  built and no policy applies: a rate no implementation of the single path can pass on
  this machine.

The process is pinned to one CPU unless ``--no-pin`` is given. With ``--group-profile`` the
devices' group selects a named certificate profile (365 days, P-256, clientAuth: the same
certificate), so every issuance resolves it from the store.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select

from common import (
    Report,
    fresh_runtime,
    issuing_private_key,
    load_average,
    machine_info,
    pin_to_one_core,
    print_machine,
    scratch_dir,
    verdict,
)
from iotsec.app.identity import devices
from iotsec.app.pki import issuance, profiles
from iotsec.app.runtime import Runtime
from iotsec.pki.csr import parse_csr
from iotsec.pki.issue import device_uri, issue_device
from iotsec.pki.profiles import DEVICE, CertProfile
from iotsec.pki.serial import format_serial, random_serial
from iotsec.store import models
from iotsec.store.reader import connect_sqlite

GOAL_PER_SECOND = 3000.0
T = TypeVar("T")


def make_csrs(ids: Sequence[str]) -> list[bytes]:
    """One PEM CSR per id, each over its own fresh P-256 key (not timed)."""
    out = []
    for device_id in ids:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
               .sign(key, hashes.SHA256()))
        out.append(csr.public_bytes(serialization.Encoding.PEM))
    return out


def register(rt: Runtime, ids: Sequence[str]) -> None:
    devices.import_devices(rt, (devices.NewDevice.parse(i, ["fleet-a"]) for i in ids))


# --------------------------------------------------------------------------- ours


def run_batch(rt: Runtime, ids: Sequence[str], csrs: Sequence[bytes], batch: int) -> list[bytes]:
    ders: list[bytes] = []
    for start in range(0, len(ids), batch):
        records = issuance.issue_batch(rt, list(zip(ids[start:start + batch],
                                                    csrs[start:start + batch], strict=True)))
        ders.extend(r.der for r in records)
    return ders


def run_single(rt: Runtime, ids: Sequence[str], csrs: Sequence[bytes]) -> list[bytes]:
    return [issuance.issue_from_csr(rt, d, c).der for d, c in zip(ids, csrs, strict=True)]


def run_pki_only(rt: Runtime, ids: Sequence[str], csrs: Sequence[bytes]) -> list[bytes]:
    ca = rt.authority("issuing")
    now = rt.now()
    # The signatures' key.use events are held and written together at the end of the slice
    # (a store write per signature is not the PKI layer's cost).
    with rt.events.held():
        return [issue_device(ca, device_id=d, spki=parse_csr(c).spki, profile=DEVICE,
                             now=now).der for d, c in zip(ids, csrs, strict=True)]


# --------------------------------------------------------------------------- references


def run_reference(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                  ids: Sequence[str], csrs: Sequence[bytes]) -> list[bytes]:
    """pyca/cryptography alone: the same checks and the same certificate content."""
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
        ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    key_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)
    issuer = ca_cert.subject
    out = []
    for device_id, pem in zip(ids, csrs, strict=True):
        csr = x509.load_pem_x509_csr(pem)
        if not csr.is_signature_valid:
            raise ValueError("bad CSR signature")
        public_key = csr.public_key()
        now = datetime.now().astimezone().replace(microsecond=0)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(random_serial())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage, critical=True)
            .add_extension(eku, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(aki, critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(device_uri(device_id))]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        out.append(cert.public_bytes(serialization.Encoding.DER))
    return out


def run_primitives(ca_key: ec.EllipticCurvePrivateKey, ids: Sequence[str],
                   csrs: Sequence[bytes]) -> list[bytes]:
    """The cryptographic work alone: verify each CSR's signature and make one ECDSA P-256
    signature over a certificate-sized message. No certificate is built."""
    message = bytes(420)
    algorithm = ec.ECDSA(hashes.SHA256())
    out = []
    for pem in csrs:
        if not x509.load_pem_x509_csr(pem).is_signature_valid:
            raise ValueError("bad CSR signature")
        out.append(ca_key.sign(message, algorithm))
    return out


def run_floor(store: Path, authority_id: int, ca_key: ec.EllipticCurvePrivateKey,
              ids: Sequence[str], csrs: Sequence[bytes]) -> list[bytes]:
    """The floor of one durable issuance (see the module's notes); returns the signatures."""
    message = bytes(420)
    algorithm = ec.ECDSA(hashes.SHA256())
    conn = connect_sqlite(store)
    out = []
    try:
        for device_id, pem in zip(ids, csrs, strict=True):
            csr = x509.load_pem_x509_csr(pem)
            if not csr.is_signature_valid:
                raise ValueError("bad CSR signature")
            spki = csr.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
            signature = ca_key.sign(message, algorithm)
            der = message + signature
            now = int(time.time())
            serial = format_serial(random_serial())
            conn.execute("BEGIN IMMEDIATE")
            state = conn.execute("SELECT state, attributes FROM devices WHERE id = ?",
                                 (device_id,)).fetchone()
            if state is None or state[0] not in ("pending", "active"):
                raise ValueError(f"device {device_id} may not hold a certificate")
            spki_sha256 = hashlib.sha256(spki).hexdigest()
            conn.execute("SELECT serial, device_id FROM certificates WHERE spki_sha256 = ? "
                         "AND not_after > ? AND (revoked_at IS NULL OR revoked_at > ?)",
                         (spki_sha256, now, now)).fetchall()
            conn.execute("UPDATE devices SET state = 'active', updated_at = ? "
                         "WHERE id = ? AND state = 'pending'", (now, device_id))
            conn.execute(
                "INSERT INTO certificates (serial, authority_id, device_id, kind, profile, "
                "subject, not_before, not_after, sha256, der, created_at, spki_sha256) "
                "VALUES (?, ?, ?, 'device', 'device', ?, ?, ?, ?, ?, ?, ?)",
                (serial, authority_id, device_id, f"CN={device_id}", now - 60,
                 now + 365 * 86400, hashlib.sha256(der).hexdigest(), der, now, spki_sha256))
            seq, head = conn.execute(
                "SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY seq DESC "
                "LIMIT 1").fetchone() or (0, "")
            for kind, actor, detail in (
                    ("key.use", "issuing", {"key": "issuing", "purpose": "certificate"}),
                    ("cert.issued", None, {"device": device_id, "profile": "device",
                                           "not_after": now + 365 * 86400})):
                text = json.dumps(detail, sort_keys=True, separators=(",", ":"))
                seq += 1
                head = hashlib.sha256(f"{head}|{seq}|{now}|{kind}|{actor}|{serial}|{text}"
                                      .encode()).hexdigest()
                conn.execute("INSERT INTO events (at, kind, outcome, actor, subject, detail, "
                             "seq, hash) VALUES (?, ?, 'success', ?, ?, ?, ?, ?)",
                             (now, kind, actor, serial, text, seq, head))
            conn.execute("COMMIT")
            out.append(signature)
    finally:
        conn.close()
    return out


OPENSSL_EXT = """[v3]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = URI:{uri}
"""


def run_openssl(workdir: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                ids: Sequence[str], csrs: Sequence[bytes]) -> tuple[float, list[bytes]]:
    """``openssl x509 -req`` once per certificate; files are written before the clock."""
    (workdir / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "ca.key").write_bytes(ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (workdir / "ca.key").chmod(0o600)
    commands = []
    for n, (device_id, pem) in enumerate(zip(ids, csrs, strict=True)):
        (workdir / f"{n}.csr").write_bytes(pem)
        (workdir / f"{n}.ext").write_text(OPENSSL_EXT.format(uri=device_uri(device_id)))
        commands.append([
            "openssl", "x509", "-req", "-in", str(workdir / f"{n}.csr"),
            "-CA", str(workdir / "ca.pem"), "-CAkey", str(workdir / "ca.key"),
            "-set_serial", "0x" + format_serial(random_serial()), "-days", "365", "-sha256",
            "-extfile", str(workdir / f"{n}.ext"), "-extensions", "v3",
            "-outform", "DER", "-out", str(workdir / f"{n}.der")])
    start = time.perf_counter()
    for cmd in commands:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, [(workdir / f"{n}.der").read_bytes() for n in range(len(commands))]


# --------------------------------------------------------------------------- checks


def check_certs(ders: Sequence[bytes], ca_cert: x509.Certificate, ids: Sequence[str],
                label: str, report: Report, sample: int = 50) -> None:
    step = max(1, len(ders) // sample)
    for n in range(0, len(ders), step):
        cert = x509.load_der_x509_certificate(ders[n])
        cert.verify_directly_issued_by(ca_cert)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if cn != ids[n] or san.get_values_for_type(x509.UniformResourceIdentifier) != [
                device_uri(ids[n])]:
            raise AssertionError(f"{label}: certificate {n} names the wrong device")
        for ext_type in (x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage,
                         x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier):
            cert.extensions.get_extension_for_class(ext_type)
    report.check(f"{label}: {len(ders)} certificates, every {step}th verified against the "
                 "issuing CA (signature, CN, SAN URI, 5 extensions)")


# --------------------------------------------------------------------------- main


PATHS = ("ref", "batch", "pki", "prims", "single", "floor")


def chunks(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--count", type=int, help="certificates per round for the batch path "
                        "and the cryptography reference (default 10000, quick 1000)")
    parser.add_argument("--single-count", type=int,
                        help="certificates per round for issue_from_csr (default 3000, quick 300)")
    parser.add_argument("--openssl-count", type=int,
                        help="certificates for the openssl x509 -req reference (default 200, "
                        "quick 20; 0 skips it)")
    parser.add_argument("--batch", type=int, default=1000, help="issue_batch size (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--group-profile", action="store_true",
                        help="the devices' group selects a named certificate profile")
    args = parser.parse_args(argv)
    count = args.count or (1000 if args.quick else 10_000)
    single = args.single_count or (300 if args.quick else 3000)
    n_openssl = args.openssl_count if args.openssl_count is not None else (
        20 if args.quick else 200)
    slices = max(1, count // args.batch)

    machine = machine_info()
    print_machine(machine)
    pinning = "not pinned" if args.no_pin else pin_to_one_core()
    report = Report("Goal 1: certificate issuance from CSRs", params={
        "certificates per round (batch, PKI-only, references)": count,
        "certificates per round (issue_from_csr)": single,
        "issue_batch size": args.batch, "rounds": args.rounds,
        "interleaving": f"each round is cut into {slices} slices; every path runs its slice "
        "in turn (rotating order), so load from other processes hits all paths alike",
        "openssl x509 -req certificates": n_openssl, "cpu": pinning,
        "load average at start": load_average(),
        "CSR keys": "P-256, one fresh key per CSR, PEM", "CA key": "P-256 (issuing CA)",
        "certificate profile": "named, selected by the devices' group" if args.group_profile
        else "built-in device"})

    with fresh_runtime("iotsec-bench-issue-") as rt, \
            fresh_runtime("iotsec-bench-floor-") as floor_rt:
        floor_store = Path(str(floor_rt.engine.url.database))
        floor_authority = floor_rt.issuing_id()
        if args.group_profile:
            profiles.add_profile(rt, CertProfile.parse("fleet", days=365, key_types="p256",
                                                       ekus="clientAuth"))
        ca = rt.authority("issuing")
        ca_key = issuing_private_key(rt)
        prepared = []
        for r in range(args.rounds):
            b_ids = [f"dev-b{r}-{i}" for i in range(count)]
            s_ids = [f"dev-s{r}-{i}" for i in range(single)]
            register(rt, b_ids + s_ids)
            register(floor_rt, s_ids)
            if args.group_profile and r == 0:
                profiles.set_group_profile(rt, "fleet-a", "fleet")
            prepared.append((b_ids, make_csrs(b_ids), s_ids, make_csrs(s_ids)))
        print(f"# prepared {args.rounds} rounds of CSRs and registered their devices",
              flush=True)

        def step(name: str, ids: Sequence[str], csrs: Sequence[bytes]) -> list[bytes]:
            if name == "ref":
                return run_reference(ca.certificate, ca_key, ids, csrs)
            if name == "batch":
                return run_batch(rt, ids, csrs, args.batch)
            if name == "pki":
                return run_pki_only(rt, ids, csrs)
            if name == "prims":
                return run_primitives(ca_key, ids, csrs)
            if name == "floor":
                return run_floor(floor_store, floor_authority, ca_key, ids, csrs)
            return run_single(rt, ids, csrs)

        rates: dict[str, list[float]] = {p: [] for p in PATHS}
        cpu_rates: dict[str, list[float]] = {p: [] for p in PATHS}
        last: dict[str, list[bytes]] = {}
        for r, (b_ids, b_csrs, s_ids, s_csrs) in enumerate(prepared):
            spent = dict.fromkeys(PATHS, 0.0)
            cpu = dict.fromkeys(PATHS, 0.0)
            out: dict[str, list[bytes]] = {p: [] for p in PATHS}
            work = list(zip(chunks(b_ids, slices), chunks(b_csrs, slices),
                            chunks(s_ids, slices), chunks(s_csrs, slices), strict=True))
            for j, (bi, bc, si, sc) in enumerate(work):
                order = PATHS[j % len(PATHS):] + PATHS[:j % len(PATHS)]
                for name in order:
                    ids, csrs = (si, sc) if name in ("single", "floor") else (bi, bc)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    out[name].extend(step(name, ids, csrs))
                    spent[name] += time.perf_counter() - start
                    cpu[name] += time.process_time() - start_cpu
            for name in PATHS:
                n = single if name in ("single", "floor") else count
                rates[name].append(n / spent[name])
                cpu_rates[name].append(n / cpu[name])
            last = out
            print(f"# round {r + 1}: " + ", ".join(
                f"{p} {rates[p][-1]:,.0f}/s" for p in PATHS), flush=True)

        b_ids, _, s_ids, _ = prepared[-1]
        check_certs(last["batch"], ca.certificate, b_ids, "ours (issue_batch)", report)
        check_certs(last["single"], ca.certificate, s_ids, "ours (issue_from_csr)", report)
        check_certs(last["pki"], ca.certificate, b_ids, "ours (PKI layer only)", report)
        check_certs(last["ref"], ca.certificate, b_ids, "reference (cryptography)", report)
        with rt.engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(models.certificates)).scalar()
        expected = args.rounds * (count + single)
        if stored != expected:
            raise AssertionError(f"{stored} certificate rows stored, {expected} expected")
        report.check(f"store holds {stored} certificate rows, as issued")

        ossl_rate = float("nan")
        if n_openssl:
            with scratch_dir("iotsec-bench-openssl-") as work_dir:
                o_ids = prepared[0][0][:n_openssl]
                seconds, o_ders = run_openssl(work_dir, ca.certificate, ca_key, o_ids,
                                              prepared[0][1][:n_openssl])
            ossl_rate = n_openssl / seconds
            check_certs(o_ders, ca.certificate, o_ids, "reference (openssl x509 -req)", report)

    med = {p: statistics.median(v) for p, v in rates.items()}
    best = {p: max(v) for p, v in rates.items()}
    per_cpu = {p: statistics.median(v) for p, v in cpu_rates.items()}

    def ratio(a: str, b: str) -> float:
        """Median over rounds of the per-round ratio (both measured side by side)."""
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    goal = f"goal >= {GOAL_PER_SECOND:,.0f}"

    def spread(p: str) -> str:
        return f"best round {best[p]:,.0f}; per CPU-second {per_cpu[p]:,.0f}"

    report.add(f"ours: issue_batch (batches of {args.batch}, SQLite)", med["batch"], "certs/s",
               f"{goal}: {verdict(med['batch'] >= GOAL_PER_SECOND)}; {spread('batch')}")
    report.add("ours: issue_from_csr (1 tx per cert, SQLite)", med["single"], "certs/s",
               f"{goal}: {verdict(med['single'] >= GOAL_PER_SECOND)}; {spread('single')}")
    report.add("ours: PKI layer only (parse_csr + issue_device, no store)", med["pki"],
               "certs/s", f"attribution, not a goal; {spread('pki')}")
    report.add("reference: pyca/cryptography CertificateBuilder, no store", med["ref"],
               "certs/s", spread("ref"))
    report.add("reference 2: openssl x509 -req, one process per cert", ossl_rate, "certs/s",
               "per-process cost")
    report.add("ceiling: crypto primitives only (CSR check + 1 ECDSA sign)", med["prims"],
               "certs/s", f"no certificate built; {spread('prims')}")
    report.add("floor: the primitives + one sqlite3 transaction of the same rows",
               med["floor"], "certs/s", f"no certificate built; {spread('floor')}")
    report.add("ratio issue_batch / cryptography", ratio("batch", "ref"), "x")
    report.add("ratio issue_from_csr / cryptography", ratio("single", "ref"), "x")
    report.add("ratio issue_from_csr / floor", ratio("single", "floor"), "x",
               "what building the certificate, the policy and the layers cost")
    report.add("ratio PKI layer only / cryptography", ratio("pki", "ref"), "x")
    report.add("ratio issue_batch / PKI layer only", ratio("batch", "pki"), "x",
               "what the store write, locking and records cost")
    report.add("ratio issue_batch / crypto primitives", ratio("batch", "prims"), "x")
    report.add("ratio issue_batch / openssl x509 -req", med["batch"] / ossl_rate, "x")
    report.params["load average at end"] = load_average()
    report.params["all rounds, certs/s (wall clock)"] = {
        p: [round(x) for x in v] for p, v in rates.items()}
    report.params["all rounds, certs per CPU-second"] = {
        p: [round(x) for x in v] for p, v in cpu_rates.items()}
    report.print()
    report.write_json(args.json, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
