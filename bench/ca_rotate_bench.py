"""CA rollover goal: ``iotsec ca rotate`` on a fleet of 100,000 device certificates in
< 10 s, the broker's re-render and reload included.

Setup (not timed): a fresh home with N devices, one certificate each (rows inserted
directly, 10 % revoked, as in broker_bench.py), a rendered broker directory and a running
``mosquitto`` on it.

Ours, per round: what ``iotsec.app.broker.rollover.rotate_ca`` does, its two steps timed
one after the other (``authorities.rotate``, then ``mosquitto.sync``): a new issuing CA key
in custody and its certificate signed by the root, the states changed in one transaction
(the previous issuing CA -> retiring), then the broker synced: the trust bundle and the
CRL of every trusted CA (the retiring one holds the fleet's revocations), the ACL for the
fleet, validation with the real mosquitto, swap, SIGHUP, wait for the reload, confirm with
the probe and canary certificates (reissued by the new CA). Each round rotates once more,
so the retiring CAs accumulate (round r runs with r retiring CAs).

Reference, same run: ``openssl req -new -newkey ec`` + ``openssl x509 -req -CA`` making
the same intermediate (P-256 key, CA:TRUE pathlen 0, keyCertSign + cRLSign, SKI/AKI)
with the same root key, as two processes. The ratio printed compares our CA step alone
(``authorities.rotate``, measured inside the rotation) with it; the goal is on the total.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from broker_bench import Broker, free_port, seeded_home
from common import machine_info, print_machine
from iotsec.app.broker import mosquitto as service
from iotsec.app.pki import authorities
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.custody.home import read_passphrase
from iotsec.pki import pkcs8
from iotsec.pki.x509 import to_pem
from iotsec.store import models as m

EXTENSIONS = """[v3]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _root_files(rt: Runtime, work: Path) -> tuple[Path, Path]:
    """The root certificate and its key in PEM (decrypted from the home, for openssl)."""
    from cryptography.hazmat.primitives import serialization

    with rt.engine.connect() as conn:
        label, der = conn.execute(select(m.authorities.c.key_label, m.authorities.c.cert_der)
                                  .where(m.authorities.c.role == "root")).one()
    key = pkcs8.decrypt_private_key((rt.settings.keys_dir / f"{label}.key.pem").read_bytes(),
                                    read_passphrase(rt.settings))
    key_file, cert_file = work / "root.key", work / "root.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert_file.write_bytes(to_pem(der, "CERTIFICATE"))
    (work / "ext.cnf").write_text(EXTENSIONS)
    return cert_file, key_file


def openssl_intermediate(work: Path, root_cert: Path, root_key: Path, n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(work / f"i{n}.key"),
                    "-subj", f"/O=iotsec/CN=openssl Issuing CA {n}", "-out",
                    str(work / f"i{n}.csr")], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(work / f"i{n}.csr"), "-CA",
                    str(root_cert), "-CAkey", str(root_key), "-days", "3650", "-sha256",
                    "-extfile", str(work / "ext.cnf"), "-extensions", "v3", "-out",
                    str(work / f"i{n}.pem")], check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 devices")
    parser.add_argument("--count", type=int, help="devices (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if shutil.which("mosquitto") is None or shutil.which("openssl") is None:
        print("needs mosquitto and openssl", file=sys.stderr)
        return 2
    count = args.count or (10_000 if args.quick else 100_000)
    print_machine(machine_info())
    work = Path(tempfile.mkdtemp(prefix="iotsec-cr-", dir="/tmp"))
    work.chmod(0o711)
    ours: list[float] = []
    ca_step: list[float] = []
    reference: list[float] = []
    parts: list[dict[str, float]] = []
    try:
        rt = seeded_home(work, count)
        broker_dir = work / "broker"
        service.render(rt, broker_dir, service.BrokerOptions(
            port=free_port(), broker_user=service.default_broker_user()))
        layout = Layout.parse(broker_dir)
        root_cert, root_key = _root_files(rt, work)
        broker = Broker(layout.conf, layout.log_file)
        try:
            broker.start()
            for r in range(args.rounds):
                t0 = time.perf_counter()
                authorities.rotate(rt)
                t1 = time.perf_counter()
                result = service.sync(rt, broker_dir)
                t2 = time.perf_counter()
                assert result.reloaded
                assert result.confirmed
                ours.append(t2 - t0)
                ca_step.append(t1 - t0)
                parts.append(result.seconds)
                reference.append(openssl_intermediate(work, root_cert, root_key, r))
                print(f"# round {r + 1}: rotate + broker {ours[-1]:.2f} s (CA step "
                      f"{ca_step[-1] * 1000:.0f} ms, broker {result.seconds}); "
                      f"openssl req + x509 {reference[-1] * 1000:.0f} ms", flush=True)
        finally:
            broker.stop()
            rt.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total, step, ref = (statistics.median(ours), statistics.median(ca_step),
                        statistics.median(reference))
    print(f"\nGoal ({count:,} devices): ca rotate with the broker's re-render and reload "
          f"{total:.2f} s, goal < 10 s: {'MET' if total < 10 else 'MISSED'}")
    print(f"  reference: openssl req + x509 making the same intermediate {ref * 1000:.0f} ms; "
          f"our CA step {step * 1000:.0f} ms (ratio ours/reference {step / ref:.2f}); "
          f"broker parts {parts[len(parts) // 2]}")
    if args.json:
        args.json.write_text(json.dumps({"devices": count, "total_s": total, "ca_step_s": step,
                                         "openssl_s": ref, "parts": parts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
