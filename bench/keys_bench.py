"""Key custody benchmarks (issue 7): KEK rotation, and the cost of keys held in an HSM.

Goal: re-wrapping 1,000,000 data keys on rotation in under 60 s.

1. Re-wrap, library only: a ``RecordRewrapper`` (what the rotation uses) over N envelopes in
   memory (parse, unwrap the data key under the old file KEK, wrap it under the new one,
   re-encode), against the
   floor in the same run: cryptography's ``AESGCM.decrypt`` + ``encrypt`` of the same
   32-byte keys with the same associated data, and nothing else.
2. Rotation through the store: ``iotsec.app.custody.kek_rotation.rotate_kek`` on a SQLite home
   whose ``device_secrets`` hold N envelopes: the dependency count, the batched re-wrap
   with compare-and-set updates, the final count and the retirement, end to end. Reference
   in the same run: the store floor, a bare ``sqlite3`` ``executemany`` UPDATE of the same
   N rows by primary key (no crypto), and the crypto floor above.
3. With SoftHSM2 (skipped with a note when it is not installed): a KEK inside the token
   (``C_Encrypt``/``C_Decrypt`` with ``CKM_AES_GCM``): re-wraps per second, against the file
   KEK in the same run (calls into a module are serialised: python-pkcs11 initialises it
   for single-threaded use); and CA signatures
   (ECDSA P-256: SHA-256 here, ``CKM_ECDSA`` in the token, DER encoding) against
   cryptography signing in process with a software key.

Run: ``python bench/keys_bench.py [--quick] [--records N] [--no-pin]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert

from common import (
    Report,
    fresh_runtime,
    load_average,
    machine_info,
    pin_to_one_core,
    print_machine,
    verdict,
)
from iotsec.app.custody import kek_rotation
from iotsec.app.custody.keys import DEVICE_SECRETS, device_secret_record_id
from iotsec.pki.keys import KeyType, LocalSigner
from iotsec.protect.kek import FileKek, KeyWrapper
from iotsec.protect.records import RecordRewrapper, encrypt_record, record_context
from iotsec.store import models
from iotsec.timeutil import ts

if TYPE_CHECKING:
    from iotsec.custody.pkcs11 import Pkcs11KeyStore
    from iotsec.custody.pkcs11_kek import Pkcs11KekStore
    from iotsec.custody.pkcs11_token import Pkcs11Token

GOAL_SECONDS = 60.0
GOAL_RECORDS = 1_000_000
_KEY_AAD = b"iotsec record key v1\x00"


def _envelopes(kek: FileKek, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        rid = device_secret_record_id(f"hs256-{i:016x}", "bench-device")
        out.append((rid, encrypt_record(secrets.token_urlsafe(32).encode(), kek,
                                     table="device_secrets", record_id=rid,
                                     field="ciphertext")))
    return out


def library_rewrap(n: int, rounds: int) -> Report:
    old, new = FileKek("kek-old", os.urandom(32)), FileKek("kek-new", os.urandom(32))
    records = _envelopes(old, n)
    keys = [(record_context("device_secrets", rid, "ciphertext"), os.urandom(32))
            for rid, _ in records]
    raw_old, raw_new = AESGCM(os.urandom(32)), AESGCM(os.urandom(32))
    wrapped = []
    for context, key in keys:
        nonce = os.urandom(12)
        wrapped.append((context, nonce, raw_old.encrypt(nonce, key, _KEY_AAD + context)))

    def ours() -> None:
        rewrapper = RecordRewrapper(old, new, table="device_secrets", field="ciphertext")
        for rid, blob in records:
            rewrapper.rewrap(blob, rid)

    def floor() -> None:
        for context, nonce, sealed in wrapped:
            key = raw_old.decrypt(nonce, sealed, _KEY_AAD + context)
            fresh = os.urandom(12)
            raw_new.encrypt(fresh, key, _KEY_AAD + context)

    times: dict[str, list[float]] = {"ours RecordRewrapper": [],
                                     "floor AESGCM decrypt+encrypt": []}
    paths: dict[str, Callable[[], None]] = {"ours RecordRewrapper": ours,
                                            "floor AESGCM decrypt+encrypt": floor}
    for r in range(rounds):
        for name in (list(paths) if r % 2 == 0 else list(reversed(paths))):
            start = time.perf_counter()
            paths[name]()
            times[name].append(time.perf_counter() - start)
    report = Report(f"Re-wrap, library only ({n:,} data keys, file KEK to file KEK)",
                    {"rounds": rounds})
    for name, values in times.items():
        report.add(name, n / statistics.median(values), "keys/s",
                   f"best {n / min(values):,.0f}")
    ours_rate = n / statistics.median(times["ours RecordRewrapper"])
    floor_rate = n / statistics.median(times["floor AESGCM decrypt+encrypt"])
    report.check(f"1,000,000 at this rate: {GOAL_RECORDS / ours_rate:.1f} s (crypto floor "
                 f"{GOAL_RECORDS / floor_rate:.1f} s); ours/floor {ours_rate / floor_rate:.2f}")
    return report


def store_rotation(n: int) -> Report:
    report = Report(f"Rotation through the store (SQLite, {n:,} device secrets)", {})
    with fresh_runtime("iotsec-keys-bench-") as rt:
        kek = rt.custody.keks().active_or_create()
        with rt.engine.begin() as conn:
            conn.execute(insert(models.devices).values(id="bench-device", state="active",
                                                       attributes="{}", created_at=0,
                                                       updated_at=0))
        start = time.perf_counter()
        batch: list[dict[str, object]] = []
        for i in range(n):
            kid = f"hs256-{i:016x}"
            batch.append({"kid": kid, "device_id": "bench-device",
                          "ciphertext": DEVICE_SECRETS.seal(
                              secrets.token_urlsafe(32).encode(), kek,
                              device_secret_record_id(kid, "bench-device")),
                          "created_at": ts(rt.now()), "expires_at": None})
            if len(batch) == 20_000 or i == n - 1:
                with rt.engine.begin() as conn:
                    conn.execute(insert(models.device_secrets), batch)
                batch = []
        print(f"# seeded {n:,} sealed rows in {time.perf_counter() - start:.1f} s", flush=True)
        start = time.perf_counter()
        result = kek_rotation.rotate_kek(rt)  # the default batch, as 'iotsec keys rotate kek'
        seconds = time.perf_counter() - start
        if not result.complete or result.rewrapped != n:
            raise RuntimeError(f"the rotation did not finish: {result}")
        report.add("ours rotate_kek (count, re-wrap, recount, retire)", seconds, "s",
                   f"{n / seconds:,.0f} records/s")
        # The store floor: the same UPDATEs by primary key, no crypto, no reads.
        db = rt.settings.resolved_home / "iotsec.db"
        rt.engine.dispose()
        conn = sqlite3.connect(db)
        blob = os.urandom(len(DEVICE_SECRETS.marker) + 136 + len(result.target) - 4)
        start = time.perf_counter()
        conn.executemany("UPDATE device_secrets SET ciphertext = ? WHERE kid = ?",
                         ((blob, f"hs256-{i:016x}") for i in range(n)))
        conn.commit()
        floor = time.perf_counter() - start
        conn.close()
        report.add("store floor: sqlite3 executemany UPDATE", floor, "s",
                   f"{n / floor:,.0f} rows/s")
    projected = seconds * GOAL_RECORDS / n
    report.check(f"projected for 1,000,000 records: {projected:.1f} s; goal < "
                 f"{GOAL_SECONDS:.0f} s: {verdict(projected < GOAL_SECONDS)}; ours/store floor "
                 f"{seconds / floor:.1f}x the time")
    return report


# --- SoftHSM2 -------------------------------------------------------------------------------


def _softhsm(work: Path) -> tuple[Path, str, str] | None:
    module = next((Path(p) for p in ("/usr/lib/softhsm/libsofthsm2.so",
                                     "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
                   if Path(p).is_file()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        return None
    (work / "tokens").mkdir(mode=0o700)
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label, pin = "iotsec-bench", secrets.token_hex(8)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                    "--so-pin", secrets.token_hex(8)], check=True, capture_output=True)
    return module, label, pin


def hsm_paths(n: int, signatures: int) -> Report | None:
    work = Path(tempfile.mkdtemp(prefix="iotsec-keys-bench-hsm-"))
    try:
        found = _softhsm(work)
        if found is None:
            print("# SoftHSM2 is not installed (Debian package softhsm2): HSM paths skipped")
            return None
        from iotsec.custody.pkcs11 import Pkcs11KeyStore
        from iotsec.custody.pkcs11_kek import Pkcs11KekStore
        from iotsec.custody.pkcs11_token import Pkcs11Config, connect

        module, label, pin = found
        token = connect(Pkcs11Config(module, label, pin))
        try:
            return _hsm_report(token, Pkcs11KekStore(token), Pkcs11KeyStore(token), n,
                               signatures)
        finally:
            token.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _hsm_report(token: Pkcs11Token, keks: Pkcs11KekStore, keys: Pkcs11KeyStore, n: int,
                signatures: int) -> Report:
    report = Report(f"SoftHSM2: {n:,} re-wraps, {signatures:,} signatures", {})
    hsm_old, hsm_new = keks.generate(), keks.generate()
    file_old, file_new = FileKek("kek-a", os.urandom(32)), FileKek("kek-b", os.urandom(32))
    aad = b"iotsec record key v1\x00" + record_context("device_secrets", "k|d", "ciphertext")
    hsm_wrapped = [hsm_old.wrap(os.urandom(32), aad) for _ in range(n)]
    file_wrapped = [file_old.wrap(os.urandom(32), aad) for _ in range(n)]

    def rewrap(old: KeyWrapper, new: KeyWrapper, items: list[bytes]) -> float:
        start = time.perf_counter()
        for w in items:
            new.wrap(old.unwrap(w, aad), aad)
        return len(items) / (time.perf_counter() - start)

    hsm_rate = rewrap(hsm_old, hsm_new, hsm_wrapped)
    file_rate = rewrap(file_old, file_new, file_wrapped)
    report.add("ours token KEK re-wrap (unwrap + wrap in the token)", hsm_rate, "keys/s")
    report.add("reference: file KEK re-wrap (cryptography)", file_rate, "keys/s")
    best = hsm_rate
    report.check(f"1,000,000 token re-wraps at this rate: {GOAL_RECORDS / best:.0f} s "
                 f"(file KEK: {GOAL_RECORDS / file_rate:.1f} s); token/file {best / file_rate:.2f}")

    signer = keys.generate("bench-ca", KeyType.ECDSA_P256)
    local = LocalSigner(KeyType.ECDSA_P256.generate())
    tbs = os.urandom(400)  # about a device certificate's TBSCertificate
    rates = {}
    for name, s in (("ours token CA signature (ECDSA P-256)", signer),
                    ("reference: cryptography in process (ECDSA P-256)", local)):
        start = time.perf_counter()
        for _ in range(signatures):
            s.sign(tbs)
        rates[name] = signatures / (time.perf_counter() - start)
        report.add(name, rates[name], "signatures/s")
    values = list(rates.values())
    report.check(f"token/in-process signing: {values[0] / values[1]:.2f} (token "
                 f"{token.label!r})")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--records", type=int, default=None,
                        help="records in the store rotation (default 1,000,000; quick 20,000)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args()
    machine = machine_info()
    print_machine(machine)
    pinned = "not pinned" if args.no_pin else pin_to_one_core()
    print(f"# {pinned}; load average at start: {load_average()}", flush=True)
    n_lib = 20_000 if args.quick else 200_000
    n_store = args.records or (20_000 if args.quick else GOAL_RECORDS)
    library_rewrap(n_lib, 2 if args.quick else 5).print()
    store_rotation(n_store).print()
    hsm = hsm_paths(2_000 if args.quick else 20_000, 200 if args.quick else 2_000)
    if hsm is not None:
        hsm.print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
