"""Start-up of whole ``iotsec`` commands, each beside its reference in the same run.

1. ``iotsec --version`` (goal <= 0.15 s) and read commands on a small home (goal <= 0.25 s),
   beside ``python -c pass`` run the same way; also ``--help``, a group's ``--help`` and one
   ``authz check`` (an allowed publish). The home holds one device with one certificate.
2. ``iotsec scan 127.0.0.1 --ports 1-65535``, whole command (goal: no slower than
   ``nmap -sT -p- -n -Pn 127.0.0.1``, whole command, finding the same open ports). Both run
   in a private network namespace (``unshare --net``) whose loopback serves only what this
   script starts there (an HTTP server and an SSH-style banner), so that both see the same
   listening ports whatever else runs on the machine. Rounds alternate; every round must find
   the same open ports, and iotsec must identify the same services in each.
3. ``iotsec data encrypt`` of a 50 MB file, whole process (goal: >= 0.7x the throughput of a
   plain Python AES-GCM script over the same file: read, encrypt each 64 KiB chunk with
   cryptography's AESGCM, write). ``iotsec data encrypt`` of an empty file is timed beside
   them: the fixed cost of the command (start-up, unlocking the home's key-encryption key).

    python bench/startup_bench.py [--runs N] [--quick] [--only startup,scan,encrypt]
                                  [--encrypt-mb N] [--before SRC] [--json FILE]

Each command is run N times as a fresh process, interleaved with its reference; medians of
the wall time are reported (for part 3 also of the CPU time, and a line starting ``RATIO``
with the throughput ratio of each encryption of the file to the script's). ``--before SRC``
also runs every ``iotsec`` command with another source tree first on ``PYTHONPATH`` (a
checkout of the code before a change: ``SRC`` is its ``src`` directory), alternated with the
others in the same rounds, so that before, after and the reference meet the same load;
those rows end in ``(before)``. The scan must then find the same ports and identify the
same services both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import load_average, machine_info, scratch_dir

IOTSEC = str(Path(sys.executable).with_name("iotsec"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    # What a read command cannot start without, imported alone: Typer (which builds every
    # parameter with pydantic) and SQLAlchemy with the SQLite dialect.
    "python -c 'import typer, sqlalchemy'": [
        sys.executable, "-c", "import typer.main, typer._adapters, sqlalchemy, "
        "sqlalchemy.dialects.sqlite.pysqlite"],
    "iotsec --version": [IOTSEC, "--version"],
    "iotsec device show dev-1": [IOTSEC, "device", "show", "dev-1"],
    "iotsec cert list --json": [IOTSEC, "cert", "list", "--json"],
    "iotsec --help": [IOTSEC, "--help"],
    "iotsec authz --help": [IOTSEC, "authz", "--help"],
    "iotsec authz check dev-1 ...": [IOTSEC, "authz", "check", "dev-1", "publish",
                                     "devices/dev-1/telemetry"],
}


#: The reference of goal 3, as a user would write it (run by this interpreter).
AESGCM_SCRIPT = """\
import os, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
aead = AESGCM(os.urandom(32))
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    while chunk := src.read(65536):
        nonce = os.urandom(12)
        dst.write(nonce + aead.encrypt(nonce, chunk, None))
"""

#: The SSH-style banner server started in the scan namespace (a device's SSH port).
BANNER_SERVER = """\
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"SSH-2.0-OpenSSH_9.2p1\\r\\n")
    except OSError:
        pass
    c.close()
"""
SCAN_PORTS = {"http": 8080, "banner": 2222}


#: ``--before``: the source tree of the code before a change, or None.
BEFORE: str | None = None


def _before_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the ``--before`` source tree first on ``PYTHONPATH``."""
    assert BEFORE is not None
    return {**env, "PYTHONPATH": os.pathsep.join([BEFORE, *(
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])}


def _variants(commands: Mapping[str, list[str]], env: Mapping[str, str]
              ) -> dict[str, tuple[list[str], Mapping[str, str]]]:
    """Each command with its environment; with ``--before``, each ``iotsec`` command also
    on the code before, right after it."""
    out: dict[str, tuple[list[str], Mapping[str, str]]] = {}
    for name, cmd in commands.items():
        out[name] = (cmd, env)
        if BEFORE is not None and cmd[0] == IOTSEC:
            out[f"{name} (before)"] = (cmd, _before_env(env))
    return out


def _one(cmd: list[str], env: Mapping[str, str], cwd: Path, *, quiet: bool = False) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL if quiet else None, check=True)
    return time.perf_counter() - start


def _timed(cmd: list[str], env: Mapping[str, str], cwd: Path) -> tuple[float, bytes, int]:
    """Wall time, standard output and exit code of one run."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, done.stdout, done.returncode


def _rows(times: Mapping[str, Sequence[float]], base_name: str, *, per: str = "x ref"
          ) -> list[dict[str, Any]]:
    base = statistics.median(times[base_name])
    print(f"{'command':40} {'median s':>9} {'min s':>7} {'max s':>7} {per:>9}")
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"command": name, "median_s": med, "min_s": min(values),
                     "max_s": max(values), "ratio_to_reference": med / base})
        print(f"{name:40} {med:9.3f} {min(values):7.3f} {max(values):7.3f} {med / base:9.2f}")
    return rows


def make_home(tmp: Path) -> dict[str, str]:
    """A home with one device and its certificate; the environment that selects it."""
    # Bytecode caches as an installed package has them (pip compiles on install): a
    # PYTHONDONTWRITEBYTECODE inherited from a development shell would make every run of a
    # source checkout compile iotsec again, and time that.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("IOTSEC_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["IOTSEC_HOME"] = str(tmp / "home")
    for setup in (["init", "--store-passphrase"], ["device", "add", "dev-1"]):
        subprocess.run([IOTSEC, *setup], env=env, cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "dev.key", "-subj",
                    "/CN=dev-1", "-out", "dev.csr"], cwd=tmp, check=True, capture_output=True)
    subprocess.run([IOTSEC, "cert", "issue", "dev-1", "--csr", "dev.csr", "-o", "dev.pem"],
                   env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    return env


def startup(runs: int, env: Mapping[str, str], tmp: Path) -> list[dict[str, Any]]:
    commands = _variants(COMMANDS, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for cmd, cmd_env in commands.values():  # warm the page cache once
        _one(cmd, cmd_env, tmp)
    for _ in range(runs):
        for name, (cmd, cmd_env) in commands.items():
            times[name].append(_one(cmd, cmd_env, tmp))
    print("\n## 1. start-up (reference: python -c pass)")
    return _rows(times, "python -c pass")


def _one_cpu(cmd: list[str], env: Mapping[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user and system, of the process and its children) of one
    run; it must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} exited with {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def encrypt(runs: int, megabytes: int, env: Mapping[str, str], tmp: Path
            ) -> list[dict[str, Any]]:
    source, empty, script = tmp / "data.bin", tmp / "empty.bin", tmp / "aesgcm.py"
    with source.open("wb") as fh:
        for _ in range(megabytes):
            fh.write(os.urandom(1_000_000))
    empty.write_bytes(b"")
    script.write_text(AESGCM_SCRIPT)
    reference = "python aesgcm.py (reference)"
    ours = f"iotsec data encrypt ({megabytes} MB)"
    commands = _variants({
        reference: [sys.executable, str(script), str(source)],
        ours: [IOTSEC, "data", "encrypt", str(source)],
        "iotsec data encrypt (empty file)": [IOTSEC, "data", "encrypt", str(empty)],
    }, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    out = tmp / "out.enc"
    for round_ in range(runs + 1):
        for name, (cmd, cmd_env) in commands.items():
            out.unlink(missing_ok=True)
            elapsed, used = _one_cpu([*cmd, str(out)], cmd_env, tmp)
            if round_:  # the first round warms the page cache and makes the KEK
                times[name].append(elapsed)
                cpu[name].append(used)
    out.unlink(missing_ok=True)
    print(f"\n## 3. data encrypt, {megabytes} MB, whole process (reference: a plain Python "
          "AES-GCM script)")
    rows = _rows(times, reference)
    base_cpu = statistics.median(cpu[reference])
    print(f"{'command':40} {'CPU median s':>12} {'x ref':>9}")
    for row in rows:
        row["throughput_ratio"] = 1 / row["ratio_to_reference"]
        row["cpu_median_s"] = statistics.median(cpu[row["command"]])
        row["cpu_throughput_ratio"] = base_cpu / row["cpu_median_s"]
        print(f"{row['command']:40} {row['cpu_median_s']:12.4f} "
              f"{row['cpu_median_s'] / base_cpu:9.2f}")
    for row in rows:
        if row["command"].startswith(ours):
            print(f"RATIO {row['command']}: {row['throughput_ratio']:.3f}x the reference's "
                  f"throughput (wall medians), {row['cpu_throughput_ratio']:.3f}x (CPU "
                  "medians); goal >= 0.7x")
    return rows


def _ours_open_ports(report: bytes) -> list[int]:
    doc = json.loads(report)
    return sorted(s["port"] for h in doc["hosts"] for s in h["services"]
                  if s["transport"] == "tcp")


def _ours_services(report: bytes) -> list[list[Any]]:
    """Each service as identified: port, name, banner, details and notes."""
    doc = json.loads(report)
    return sorted([s["port"], s["service"], s["banner"], s["details"], s["notes"]]
                  for h in doc["hosts"] for s in h["services"])


def _nmap_open_ports(xml: bytes) -> list[int]:
    from iotsec.scan.nmap import parse_nmap_xml

    return sorted(p for _a, p in parse_nmap_xml(xml).open)


def scan_inner(rounds: int, home_env: Mapping[str, str], tmp: Path) -> dict[str, Any]:
    """Run inside the private network namespace: bring up its loopback, start the servers,
    alternate the two whole commands."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    servers = [
        subprocess.Popen([sys.executable, "-m", "http.server", str(SCAN_PORTS["http"]),
                          "--bind", "127.0.0.1"], cwd=tmp, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-c", BANNER_SERVER, str(SCAN_PORTS["banner"])]),
    ]
    try:
        time.sleep(1.0)
        nmap = [shutil.which("nmap") or "nmap", "-sT", "-p-", "-n", "-Pn", "-oX", "-",
                "127.0.0.1"]
        ours = [IOTSEC, "scan", "127.0.0.1", "--ports", "1-65535", "--json",
                "--fail-on", "never"]
        commands = _variants({"nmap -sT -p- -n -Pn": nmap, "iotsec scan": ours}, home_env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        found: dict[str, list[int]] = {}
        identified: dict[str, list[list[Any]]] = {}
        inside: dict[str, dict[str, list[float]]] = {
            name: {"scan": [], "port phase": []} for name in commands
            if not name.startswith("nmap")}
        for round_ in range(rounds + 1):
            for name, (cmd, cmd_env) in commands.items():
                elapsed, out, code = _timed(cmd, cmd_env, tmp)
                if code != 0:
                    raise SystemExit(f"{name} exited with {code}")
                ports = (_nmap_open_ports(out) if name.startswith("nmap")
                         else _ours_open_ports(out))
                if found.setdefault(name, ports) != ports:
                    raise SystemExit(f"{name} found {ports}, then {found[name]}")
                if not name.startswith("nmap"):
                    # The same identification in every round, not only the same ports.
                    services = _ours_services(out)
                    if identified.setdefault(name, services) != services:
                        raise SystemExit(f"{name} identified {services}, then "
                                         f"{identified[name]}")
                if round_:  # the first round warms the page cache
                    times[name].append(elapsed)
                    if not name.startswith("nmap"):
                        doc = json.loads(out)
                        inside[name]["scan"].append(doc["scan"]["duration_seconds"])
                        inside[name]["port phase"].append(doc["port_scan"]["seconds"])
        if len({json.dumps(v) for v in identified.values()}) > 1:
            raise SystemExit(f"the versions identified different services: {identified}")
        return {"times": times, "open_ports": found, "inside": inside,
                "services": identified["iotsec scan"]}
    finally:
        for server in servers:
            server.terminate()
            server.wait()


def scan(rounds: int, env: Mapping[str, str], tmp: Path) -> list[dict[str, Any]]:
    inner = [sys.executable, __file__, "--scan-inner", str(rounds), "--tmp", str(tmp),
             *(["--before", BEFORE] if BEFORE else [])]
    done = None
    for unshare in (["unshare", "--net"], ["unshare", "--map-root-user", "--net"]):
        try:
            done = subprocess.run([*unshare, *inner], env=env, capture_output=True,
                                  check=False)
        except FileNotFoundError:
            break
        if done.returncode == 0:
            break
    if done is None or done.returncode != 0:
        print("\n## 2. scan: skipped, no private network namespace could be made "
              "(run as root, or allow user namespaces)")
        if done is not None:
            sys.stderr.write(done.stderr.decode("utf-8", "replace")[-2000:])
        return []
    result = json.loads(done.stdout)
    ports = result["open_ports"]
    reference = ports["nmap -sT -p- -n -Pn"]
    print("\n## 2. scan of 127.0.0.1, all 65,535 TCP ports, whole command, in a private "
          "network namespace (reference: nmap)")
    print(f"open ports: nmap {reference}, " + ", ".join(
        f"{name} {found}" for name, found in ports.items() if found is not reference)
        + (" (same)" if all(found == reference for found in ports.values())
           else " (DIFFERENT)"))
    print("iotsec identified, the same in every round: " + ", ".join(
        f"{port}/{name} ({banner})" for port, name, banner, *_rest in result["services"]))
    rows = _rows(result["times"], "nmap -sT -p- -n -Pn")
    for row in rows:
        row["open_ports"] = ports[row["command"]]
        phases = result["inside"].get(row["command"])
        if phases is None:
            continue
        inside = {k: statistics.median(v) for k, v in phases.items()}
        row["report_seconds"] = inside
        row["services"] = result["services"]
        print(f"{row['command']}, as its report times it: {inside['scan']:.3f} s, of which "
              f"the port phase {inside['port phase']:.3f} s (medians); the rest of the whole "
              "command is start-up and exit")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 runs of each")
    parser.add_argument("--only", default="startup,scan,encrypt",
                        help="comma-separated: startup, scan, encrypt")
    parser.add_argument("--encrypt-mb", type=int, default=50)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--before", metavar="SRC", help="also run the iotsec commands with "
                        "this source tree first on PYTHONPATH (the code before a change)")
    parser.add_argument("--scan-inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global BEFORE
    BEFORE = str(Path(args.before).resolve()) if args.before else None
    if args.scan_inner is not None:
        print(json.dumps(scan_inner(args.scan_inner, os.environ, args.tmp)))
        return
    runs = 5 if args.quick else args.runs
    only = set(args.only.split(","))
    results: dict[str, Any] = {"machine": machine_info()}
    print(f"# machine: {results['machine']}")
    with scratch_dir("iotsec-startup-") as tmp:
        env = make_home(tmp)
        for part, run in (("startup", lambda: startup(runs, env, tmp)),
                          ("scan", lambda: scan(runs, env, tmp)),
                          ("encrypt", lambda: encrypt(runs, args.encrypt_mb, env, tmp))):
            if part in only:
                results[part] = run()
                results[f"{part}_load_average"] = load_average()
                print(f"# load average after {part}: {results[f'{part}_load_average']}; "
                      f"{runs} runs each, interleaved")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
