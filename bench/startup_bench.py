"""Start-up of whole ``iotsec`` commands (issue goal: ``--version`` <= 0.15 s, a read command
on a small home <= 0.25 s), beside ``python -c pass`` run the same way in the same run.

    python bench/startup_bench.py [--runs N] [--quick] [--json FILE]

Each command is run N times as a fresh process, interleaved with the reference; the median
wall time and the peak RSS of the child are reported. The home holds one device with one
certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import load_average, machine_info, scratch_dir

IOTSEC = str(Path(sys.executable).with_name("iotsec"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "iotsec --version": [IOTSEC, "--version"],
    "iotsec device show dev-1": [IOTSEC, "device", "show", "dev-1"],
    "iotsec cert list --json": [IOTSEC, "cert", "list", "--json"],
    "iotsec --help": [IOTSEC, "--help"],
}


def _one(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 runs of each")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    with scratch_dir("iotsec-startup-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
        env["IOTSEC_HOME"] = str(tmp / "home")
        for setup in (["init", "--store-passphrase"], ["device", "add", "dev-1"]):
            subprocess.run([IOTSEC, *setup], env=env, cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", "dev.key", "-subj",
                        "/CN=dev-1", "-out", "dev.csr"], cwd=tmp, check=True,
                       capture_output=True)
        subprocess.run([IOTSEC, "cert", "issue", "dev-1", "--csr", "dev.csr", "-o",
                        "dev.pem"], env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for cmd in COMMANDS.values():  # warm the page cache once
            _one(cmd, env, tmp)
        for _ in range(runs):
            for name, cmd in COMMANDS.items():
                times[name].append(_one(cmd, env, tmp)[0])
    base = statistics.median(times["python -c pass"])
    print(f"# machine: {machine_info()}")
    print(f"# load average at the end: {load_average()}; {runs} runs each, interleaved")
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'max s':>7} {'x python':>9}")
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"command": name, "median_s": med, "min_s": min(values),
                     "max_s": max(values), "ratio_to_python": med / base})
        print(f"{name:32} {med:9.3f} {min(values):7.3f} {max(values):7.3f} "
              f"{med / base:9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
