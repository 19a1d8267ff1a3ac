"""Data-protection benchmarks (issue 7): payload round trips and streaming file encryption.

Goals:

1. Seal + open of 256-byte payloads: at least 50,000 round trips/s on one core.
   Ours: ``iotsec.protect.payload.seal`` then ``open`` (strict COSE parse, kid lookup,
   replay window check and update, AEAD) for COSE_Encrypt0 with A256GCM and
   ChaCha20/Poly1305 under an X25519 pair key, and COSE_Sign1 with ES256 and EdDSA.
   Reference in the same run: pycose 1.1 (encode, decode, decrypt/verify: no replay window),
   and the floor: cryptography's AEAD alone (encrypt + decrypt with a fresh nonce).
2. Streaming file encryption: at least 70% of the raw AES-256-GCM throughput of
   cryptography, same run. 256 MiB of random data, 64 KiB chunks:
   * in memory (the format's own cost): ``encrypt_stream``/``decrypt_stream`` from an
     in-memory file to a discarding sink, against ``AESGCM.encrypt``/``decrypt`` over the
     same 64 KiB slices of the same buffer (no copies at all: the strictest reference);
   * files (what a user sees): file to file, against the same raw AES-GCM loop reading and
     writing the same files, and ``openssl enc -aes-256-ctr`` (no authentication; the CLI
     floor). The files live on tmpfs (``/dev/shm``, or ``--dir``) so that disk writeback of
     one path's output does not land in another path's timing.

3. Whole commands (issue 18): ``iotsec data encrypt`` of a 50 MB file, the whole process
   (start-up, unlocking the home's KEK, the stream, the store record and its event), at
   least 0.7x the throughput of a plain Python AES-GCM script over the same file (read,
   ``AESGCM.encrypt`` each 64 KiB chunk with a fresh nonce, write), both run as fresh
   processes, interleaved, in the same run; the same for ``iotsec data decrypt`` against the
   script's decryption of its own output. ``iotsec data encrypt`` of an empty file is timed
   beside them: the command's fixed cost. The home is made by ``iotsec init
   --store-passphrase`` (a generated secret, ADR 0030); ``--passphrase-home`` also times a
   home whose secret is a passphrase in ``IOTSEC_CA_PASSPHRASE`` (scrypt). Files on tmpfs
   like part 2; the children are not pinned (a user's command is not) and keep their
   bytecode caches.

Every path of parts 1 and 2 runs in alternating slices within each round (rotating order),
5 rounds; the median round is reported with the best. The process pins itself to one CPU
(``--no-pin``) for those parts.

Run: ``python bench/protect_bench.py [--quick] [--only payloads,streams,commands]
[--runs N] [--passphrase-home] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from common import (
    Report,
    load_average,
    machine_info,
    pin_to_one_core,
    print_machine,
    verdict,
)
from iotsec.protect.atrest import decrypt_stream, encrypt_stream
from iotsec.protect.cose import SEQ_LABEL
from iotsec.protect.kek import FileKek
from iotsec.protect.pairing import Algorithm, SigningKey, establish, new_salt
from iotsec.protect.payload import Keyring, open, seal
from iotsec.protect.replay import ReplayWindow

MESSAGE_GOAL = 50_000.0
STREAM_GOAL = 0.70
PAYLOAD = bytes(range(256))
CHUNK = 64 * 1024
MiB = 1024 * 1024


def rounds_of(paths: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every path once per round, rotating the order; each returns a rate."""
    names = list(paths)
    results: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(paths[name]())
    return results


# --- 1. payloads --------------------------------------------------------------------------


def message_paths(n: int) -> dict[str, Callable[[], float]]:
    from pycose import headers
    from pycose.algorithms import A256GCM, EdDSA, Es256
    from pycose.keys import CoseKey, SymmetricKey
    from pycose.messages import CoseMessage, Enc0Message, Sign1Message

    def pycose_decode(data: bytes) -> CoseMessage:
        # pycose 1.1 expects a list and a dict where cbor2 6 gives a tuple and a frozendict.
        item = cbor2.loads(data)
        items = [dict(v) if isinstance(v, Mapping) else v for v in item.value]
        return CoseMessage._COSE_MSG_ID[item.tag].from_cose_obj(items, True)

    dev, app = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    salt = new_salt()
    paths: dict[str, Callable[[], float]] = {}

    for alg in (Algorithm.A256GCM, Algorithm.CHACHA20_POLY1305):
        d = establish(dev, app.public_key(), own_id="dev-1", peer_id="app", salt=salt, alg=alg)
        a = establish(app, dev.public_key(), own_id="app", peer_id="dev-1", salt=salt, alg=alg)
        ring, counter = Keyring([a.receive]), [0]
        window = ReplayWindow()

        def ours(send: object = d.send, ring: Keyring = ring, window: ReplayWindow = window,
                 counter: list[int] = counter) -> float:
            start = time.perf_counter()
            base = counter[0]
            for seq in range(base, base + n):
                opened = open(seal(PAYLOAD, send, seq=seq), ring, window)  # type: ignore[arg-type]
            counter[0] = base + n
            assert opened.payload == PAYLOAD
            return n / (time.perf_counter() - start)

        aead = AESGCM(os.urandom(32)) if alg is Algorithm.A256GCM \
            else ChaCha20Poly1305(os.urandom(32))

        def floor(aead: AESGCM | ChaCha20Poly1305 = aead) -> float:
            start = time.perf_counter()
            for _ in range(n):
                nonce = secrets.token_bytes(12)
                aead.decrypt(nonce, aead.encrypt(nonce, PAYLOAD, b"aad"), b"aad")
            return n / (time.perf_counter() - start)

        paths[f"ours {alg.cose_name} Encrypt0"] = ours
        paths[f"floor {alg.cose_name} AEAD alone"] = floor

    # pycose Encrypt0 A256GCM (it has no ChaCha20/Poly1305).
    key = SymmetricKey(k=os.urandom(32))
    kid = b"k" * 8

    def pycose_enc0() -> float:
        m = max(1, n // 10)
        start = time.perf_counter()
        for seq in range(m):
            msg = Enc0Message(phdr={headers.Algorithm: A256GCM, headers.KID: kid, SEQ_LABEL: seq},
                              uhdr={headers.IV: secrets.token_bytes(12)}, payload=PAYLOAD)
            msg.key = key
            back = pycose_decode(msg.encode())
            back.key = key
            assert back.decrypt() == PAYLOAD
        return m / (time.perf_counter() - start)

    paths["pycose A256GCM Encrypt0"] = pycose_enc0

    for name, private, cose_alg in (("ES256", ec.generate_private_key(ec.SECP256R1()), Es256),
                                    ("EdDSA", ed25519.Ed25519PrivateKey.generate(), EdDSA)):
        signer = SigningKey(private, sender_id="dev-1")
        ring, window, counter = Keyring([signer.verifying_key()]), ReplayWindow(), [0]
        sign_n = max(1, n // 10)

        def ours_sign(signer: SigningKey = signer, ring: Keyring = ring,
                      window: ReplayWindow = window, counter: list[int] = counter,
                      m: int = sign_n) -> float:
            start = time.perf_counter()
            base = counter[0]
            for seq in range(base, base + m):
                open(seal(PAYLOAD, signer, seq=seq), ring, window)
            counter[0] = base + m
            return m / (time.perf_counter() - start)

        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        cose_key = CoseKey.from_pem_private_key(pem)

        def pycose_sign(cose_key: CoseKey = cose_key, cose_alg: object = cose_alg,
                        m: int = max(1, sign_n // 4)) -> float:
            start = time.perf_counter()
            for seq in range(m):
                msg = Sign1Message(phdr={headers.Algorithm: cose_alg, headers.KID: kid,
                                         SEQ_LABEL: seq}, payload=PAYLOAD)
                msg.key = cose_key
                back = pycose_decode(msg.encode())
                back.key = cose_key
                assert back.verify_signature()
            return m / (time.perf_counter() - start)

        paths[f"ours {name} Sign1"] = ours_sign
        paths[f"pycose {name} Sign1"] = pycose_sign
    return paths


# --- 2. streams -----------------------------------------------------------------------------


class Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def stream_memory_paths(data: bytes) -> tuple[dict[str, Callable[[], float]], bytes]:
    size = len(data)
    kek = FileKek("kek-bench", os.urandom(32))
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, kek, chunk_size=CHUNK)
    blob = out.getvalue()
    raw = AESGCM(os.urandom(32))
    view = memoryview(data)
    sealed = [raw.encrypt(i.to_bytes(12, "big"), view[i:i + CHUNK], None)
              for i in range(0, size, CHUNK)]

    def rate(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return size / (time.perf_counter() - start) / MiB

    def raw_encrypt() -> None:
        for i in range(0, size, CHUNK):
            raw.encrypt(i.to_bytes(12, "big"), view[i:i + CHUNK], None)

    def raw_decrypt() -> None:
        for i, chunk in enumerate(sealed):
            raw.decrypt((i * CHUNK).to_bytes(12, "big"), chunk, None)

    return {
        "ours encrypt (memory)": lambda: rate(
            lambda: encrypt_stream(io.BytesIO(data), Discard(), kek, chunk_size=CHUNK)),
        "raw AESGCM encrypt (memory)": lambda: rate(raw_encrypt),
        "ours decrypt (memory)": lambda: rate(
            lambda: decrypt_stream(io.BytesIO(blob), Discard(), kek)),
        "raw AESGCM decrypt (memory)": lambda: rate(raw_decrypt),
    }, blob


def stream_file_paths(work: Path, size: int) -> dict[str, Callable[[], float]]:
    src = work / "plain.bin"
    with src.open("wb") as fh:
        for _ in range(size // MiB):
            fh.write(os.urandom(MiB))
    kek = FileKek("kek-bench", os.urandom(32))
    enc, dec = work / "ours.enc", work / "ours.dec"
    with src.open("rb") as s, enc.open("wb") as d:
        encrypt_stream(s, d, kek, chunk_size=CHUNK)
    raw = AESGCM(os.urandom(32))
    raw_enc = work / "raw.enc"
    key, iv = os.urandom(32).hex(), os.urandom(16).hex()

    def rate(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return size / (time.perf_counter() - start) / MiB

    def ours_encrypt() -> None:
        with src.open("rb") as s, (work / "ours2.enc").open("wb") as d:
            encrypt_stream(s, d, kek, chunk_size=CHUNK)

    def ours_decrypt() -> None:
        with enc.open("rb") as s, dec.open("wb") as d:
            decrypt_stream(s, d, kek)

    def raw_encrypt() -> None:
        with src.open("rb") as s, raw_enc.open("wb") as d:
            i = 0
            while block := s.read(CHUNK):
                d.write(raw.encrypt(i.to_bytes(12, "big"), block, None))
                i += 1

    def raw_decrypt() -> None:
        with raw_enc.open("rb") as s, (work / "raw.dec").open("wb") as d:
            i = 0
            while block := s.read(CHUNK + 16):
                d.write(raw.decrypt(i.to_bytes(12, "big"), block, None))
                i += 1

    def openssl_ctr() -> None:
        subprocess.run(["openssl", "enc", "-aes-256-ctr", "-K", key, "-iv", iv, "-in", str(src),
                        "-out", str(work / "openssl.enc")], check=True)

    raw_encrypt()  # so that raw_decrypt has input in the first round
    return {"ours encrypt (files)": lambda: rate(ours_encrypt),
            "raw AESGCM encrypt (files)": lambda: rate(raw_encrypt),
            "ours decrypt (files)": lambda: rate(ours_decrypt),
            "raw AESGCM decrypt (files)": lambda: rate(raw_decrypt),
            "openssl enc -aes-256-ctr (files)": lambda: rate(openssl_ctr)}


# --- 3. whole commands -------------------------------------------------------------------

IOTSEC = str(Path(sys.executable).with_name("iotsec"))
COMMAND_GOAL = 0.70

#: The reference of goal 3, as a user would write it (run by this interpreter).
AESGCM_ENCRYPT = """\
import os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
key = os.urandom(32)
aead = AESGCM(key)
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    dst.write(key)
    while chunk := src.read(65536):
        nonce = os.urandom(12)
        dst.write(nonce + aead.encrypt(nonce, chunk, None))
"""
LIBRARIES = ("import typer.main, typer._adapters, pydantic, sqlalchemy, "
             "sqlalchemy.dialects.sqlite.pysqlite; "
             "from cryptography.hazmat.primitives.ciphers.aead import AESGCM")
AESGCM_DECRYPT = """\
import sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    aead = AESGCM(src.read(32))
    while block := src.read(12 + 65536 + 16):
        dst.write(aead.decrypt(block[:12], block[12:], None))
"""


def _child_env(home: Path, passphrase: str | None) -> dict[str, str]:
    # Bytecode caches as an installed package has them: a PYTHONDONTWRITEBYTECODE inherited
    # from a development shell would make every run compile iotsec again, and time that.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IOTSEC_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["IOTSEC_HOME"] = str(home)
    if passphrase is not None:
        env["IOTSEC_CA_PASSPHRASE"] = passphrase
    return env


def _timed_run(cmd: list[str], env: Mapping[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def command_paths(work: Path, megabytes: int, passphrase_home: bool
                  ) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """name -> (command, environment, output file it creates)."""
    source, empty = work / "data.bin", work / "empty.bin"
    with source.open("wb") as fh:
        for _ in range(megabytes):
            fh.write(os.urandom(1_000_000))
    empty.write_bytes(b"")
    (work / "enc.py").write_text(AESGCM_ENCRYPT)
    (work / "dec.py").write_text(AESGCM_DECRYPT)
    homes = {"": _child_env(work / "home", None)}
    if passphrase_home:
        homes[", passphrase home"] = _child_env(
            work / "home-pass", "a passphrase a person chose for this benchmark")
    for env in homes.values():
        init = [IOTSEC, "init"] + ([] if "IOTSEC_CA_PASSPHRASE" in env
                                   else ["--store-passphrase"])
        subprocess.run(init, env=env, cwd=work, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    base = homes[""]
    paths = {
        # Not a reference: the floor of any command built on iotsec's libraries (Typer,
        # which builds every parameter with pydantic; pydantic for the settings; SQLAlchemy
        # with the SQLite dialect; cryptography's AES-GCM), imported and nothing else done.
        "libraries alone (import, nothing else)": (
            [sys.executable, "-c", LIBRARIES, "-"], base, work / "libraries.out"),
        "plain AES-GCM script, encrypt": ([sys.executable, "enc.py", str(source)], base,
                                          work / "script.enc"),
        "plain AES-GCM script, decrypt": ([sys.executable, "dec.py", "script.enc"], base,
                                          work / "script.dec"),
    }
    for suffix, env in homes.items():
        name = suffix.replace(", ", "")
        paths[f"iotsec data encrypt{suffix}"] = (
            [IOTSEC, "data", "encrypt", str(source)], env, work / f"ours{name}.enc")
        paths[f"iotsec data decrypt{suffix}"] = (
            [IOTSEC, "data", "decrypt", f"ours{name}.enc"], env, work / f"ours{name}.dec")
        paths[f"iotsec data encrypt, empty file{suffix}"] = (
            [IOTSEC, "data", "encrypt", str(empty)], env, work / f"empty{name}.enc")
    return paths


def run_commands(work: Path, megabytes: int, runs: int, passphrase_home: bool
                 ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall times and CPU times of each command, ``runs`` rounds of each in turn."""
    paths = command_paths(work, megabytes, passphrase_home)
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(runs + 1):  # round 0 warms the page cache and makes the KEK
        for name, (cmd, env, out) in paths.items():
            out.unlink(missing_ok=True)
            wall, used = _timed_run([*cmd, str(out)], env, work)
            if round_:
                times[name].append(wall)
                cpu[name].append(used)
    return times, cpu


def commands_report(times: Mapping[str, list[float]], cpu: Mapping[str, list[float]],
                    megabytes: int, runs: int) -> Report:
    report = Report(f"Whole commands, {megabytes} MB file (fresh processes)",
                    {"runs": runs, "interleaved": "yes"})
    for name, values in times.items():
        report.add(name, statistics.median(values), "s",
                   f"min {min(values):.3f}, max {max(values):.3f}; CPU (user + system) "
                   f"median {statistics.median(cpu[name]):.3f} s")

    def throughput_ratio(ours: str, ref: str, of: Mapping[str, list[float]] = times
                         ) -> float:
        return statistics.median(of[ref]) / statistics.median(of[ours])

    enc = throughput_ratio("iotsec data encrypt", "plain AES-GCM script, encrypt")
    dec = throughput_ratio("iotsec data decrypt", "plain AES-GCM script, decrypt")
    report.check(f"iotsec data encrypt: {enc:.2f}x the plain script's throughput, decrypt "
                 f"{dec:.2f}x; goal >= {COMMAND_GOAL:.2f}: "
                 f"{verdict(min(enc, dec) >= COMMAND_GOAL)}")
    report.check("the same in CPU time (less sensitive to other work on the machine): "
                 "encrypt "
                 f"{throughput_ratio('iotsec data encrypt', 'plain AES-GCM script, encrypt', cpu):.2f}x"
                 ", decrypt "
                 f"{throughput_ratio('iotsec data decrypt', 'plain AES-GCM script, decrypt', cpu):.2f}x")
    fixed = statistics.median(times["iotsec data encrypt, empty file"])
    floor = statistics.median(times["libraries alone (import, nothing else)"])
    reference = statistics.median(times["plain AES-GCM script, encrypt"])
    report.check(f"fixed cost (empty file): {fixed:.3f} s, of which importing the libraries "
                 f"alone {floor:.3f} s; the reference's whole run: {reference:.3f} s")
    if "iotsec data encrypt, passphrase home" in times:
        scrypt_home = throughput_ratio("iotsec data encrypt, passphrase home",
                                       "plain AES-GCM script, encrypt")
        report.check(f"passphrase home (scrypt): encrypt {scrypt_home:.2f}x")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", default="payloads,streams,commands",
                        help="comma-separated: payloads, streams, commands")
    parser.add_argument("--runs", type=int, default=15,
                        help="runs of each whole command (part 3)")
    parser.add_argument("--megabytes", type=int, default=50, help="file size of part 3")
    parser.add_argument("--passphrase-home", action="store_true",
                        help="part 3 also times a home whose secret is a passphrase")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the stream benchmark's files go (default: /dev/shm if "
                        "present, else the temporary directory)")
    args = parser.parse_args()

    machine = machine_info()
    print_machine(machine)
    only = set(args.only.split(","))
    everywhere = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    pinned = "not pinned" if args.no_pin else pin_to_one_core()
    print(f"# {pinned}; load average at start: {load_average()}", flush=True)
    rounds = 2 if args.quick else args.rounds
    base = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    reports: dict[str, Report] = {}
    if "payloads" in only:
        reports["payloads"] = payloads_part(2_000 if args.quick else 20_000, rounds, pinned)
    if "streams" in only:
        reports["streams"] = streams_part((16 if args.quick else 256) * MiB, rounds, base)
    if "commands" in only:
        if everywhere is not None:
            os.sched_setaffinity(0, everywhere)  # a user's command is not pinned
        runs = 3 if args.quick else args.runs
        work = Path(tempfile.mkdtemp(prefix="iotsec-protect-bench-", dir=base))
        try:
            times, cpu = run_commands(work, args.megabytes, runs, args.passphrase_home)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        reports["commands"] = commands_report(times, cpu, args.megabytes, runs)
        reports["commands"].params["files in"] = str(work.parent)
        reports["commands"].print()
    print(f"# load average at end: {load_average()}")
    if args.json is not None:
        for name, report in reports.items():
            report.write_json(args.json if name == "payloads"
                              else args.json.with_suffix(f".{name}.json"), machine)


def payloads_part(n: int, rounds: int, pinned: str) -> Report:
    report = Report("Payload round trips (seal + open, 256-byte payload)",
                    {"round trips per slice": n, "rounds": rounds, "cpu": pinned})
    results = rounds_of(message_paths(n), rounds)
    for name, rates in results.items():
        report.add(name, statistics.median(rates), "round trips/s",
                   f"best {max(rates):,.0f}")
    ours = statistics.median(results["ours A256GCM Encrypt0"])
    chacha = statistics.median(results["ours ChaCha20/Poly1305 Encrypt0"])
    ref = statistics.median(results["pycose A256GCM Encrypt0"])
    floor = statistics.median(results["floor A256GCM AEAD alone"])
    report.check(f"A256GCM: {ours:,.0f}/s, ChaCha20/Poly1305: {chacha:,.0f}/s; goal "
                 f"{MESSAGE_GOAL:,.0f}/s on one core: {verdict(min(ours, chacha) >= MESSAGE_GOAL)}")
    report.check(f"ours/pycose (A256GCM Encrypt0): {ours / ref:.1f}x; ours/AEAD alone: "
                 f"{ours / floor:.2f}")
    for name in ("ES256", "EdDSA"):
        a, b = (statistics.median(results[f"ours {name} Sign1"]),
                statistics.median(results[f"pycose {name} Sign1"]))
        report.check(f"{name} Sign1: ours/pycose {a / b:.1f}x")
    report.print()
    return report


def streams_part(size: int, rounds: int, base: Path | None) -> Report:
    data = os.urandom(size)
    stream = Report(f"Streaming encryption, {size // MiB} MiB, {CHUNK // 1024} KiB chunks",
                    {"rounds": rounds})
    memory_paths, _ = stream_memory_paths(data)
    del data
    work = Path(tempfile.mkdtemp(prefix="iotsec-protect-bench-", dir=base))
    stream.params["files in"] = str(work.parent)
    try:
        file_paths = stream_file_paths(work, size)
        results = rounds_of({**memory_paths, **file_paths}, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, rates in results.items():
        stream.add(name, statistics.median(rates), "MiB/s", f"best {max(rates):,.0f}")

    def ratio(a: str, b: str) -> float:
        return statistics.median(results[a]) / statistics.median(results[b])

    enc_mem = ratio("ours encrypt (memory)", "raw AESGCM encrypt (memory)")
    dec_mem = ratio("ours decrypt (memory)", "raw AESGCM decrypt (memory)")
    stream.check(f"in memory: ours/raw AES-256-GCM encrypt {enc_mem:.2f}, decrypt "
                 f"{dec_mem:.2f}; goal >= {STREAM_GOAL:.2f}: "
                 f"{verdict(min(enc_mem, dec_mem) >= STREAM_GOAL)}")
    enc_file = ratio("ours encrypt (files)", "raw AESGCM encrypt (files)")
    dec_file = ratio("ours decrypt (files)", "raw AESGCM decrypt (files)")
    stream.check(f"files: ours/raw AES-256-GCM encrypt {enc_file:.2f}, decrypt {dec_file:.2f}; "
                 f"goal >= {STREAM_GOAL:.2f}: {verdict(min(enc_file, dec_file) >= STREAM_GOAL)}")
    stream.check("files: ours encrypt / openssl enc -aes-256-ctr "
                 f"{ratio('ours encrypt (files)', 'openssl enc -aes-256-ctr (files)'):.2f}")
    stream.print()
    return stream


if __name__ == "__main__":
    main()
