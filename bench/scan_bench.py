"""Scanner benchmarks, on 127.0.0.1 only (servers this script starts on free ports).

1. TCP connect scan of all 65,535 ports of 127.0.0.1 (goal: no slower than
   ``nmap -sT -p-``). Ours: ``tcp_connect_scan`` with the default settings of
   ``iotsec scan`` (concurrency 500, rate limit 100,000/s, 1 s timeout). Reference in the
   same run: ``nmap -sT -p- -n -Pn 127.0.0.1``. Rounds alternate between the two; both
   must report the same open ports.
2. Service identification per open port (goal: at most 2 s in the worst case). Ours:
   ``identify_tcp`` against an SSH banner, an HTTP server, a TLS server (openssl s_server),
   an MQTT broker (mosquitto), a server that never answers (the worst case), one that sends
   an endless banner and a TLS server that stalls mid-handshake. Reference in the same run:
   ``nmap -sV`` on the HTTP server and on the silent one.
3. TLS audit per endpoint (goal: at most 0.5 s). Ours: ``tls.observe`` + ``tls.assess`` on
   a modern server and on a weak one (TLS 1.0, NULL and anonymous suites, RSA-1024,
   expired). References in the same run: one ``openssl s_client`` handshake, and nmap's
   ``ssl-enum-ciphers`` script on the same endpoints.

Run: ``python bench/scan_bench.py [--quick] [--rounds N] [--no-nmap-sv] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.scan import servers as srv  # noqa: E402

from iotsec.findings.model import Location  # noqa: E402
from iotsec.netprobe import tls as tls_probe  # noqa: E402
from iotsec.netprobe.identify import identify_tcp  # noqa: E402
from iotsec.netprobe.ports import tcp_connect_scan  # noqa: E402
from iotsec.scan import tls  # noqa: E402
from iotsec.scan.model import PortScanConfig  # noqa: E402

HOST = "127.0.0.1"


def nmap_open_ports(xml: bytes) -> list[int]:
    from iotsec.scan.nmap import parse_nmap_xml

    return sorted(p for _a, p in parse_nmap_xml(xml).open)


def port_scan(rounds: int, nmap: str | None) -> dict[str, object]:
    ours: list[float] = []
    theirs: list[float] = []
    agree = True
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = asyncio.run(tcp_connect_scan(((HOST, p) for p in range(1, 65536)),
                                              PortScanConfig()))
        ours.append(time.perf_counter() - t0)
        mine = [p for _a, p in result.open]
        if nmap:
            t0 = time.perf_counter()
            out = subprocess.run([nmap, "-sT", "-p-", "-n", "-Pn", "--open", "-oX", "-", HOST],
                                 capture_output=True, check=True).stdout
            theirs.append(time.perf_counter() - t0)
            reference = nmap_open_ports(out)
            if reference != mine:
                agree = False
                print(f"# open ports differ: ours {mine}, nmap {reference}")
    data: dict[str, object] = {"ours_median_s": statistics.median(ours), "ours_all_s": ours,
                               "open_ports": mine, "agree": agree}
    if theirs:
        data["nmap_median_s"] = statistics.median(theirs)
        data["nmap_all_s"] = theirs
    return data


def identification(ports: dict[str, int], repeat: int) -> dict[str, dict[str, float | str]]:
    out: dict[str, dict[str, float | str]] = {}
    for name, port in ports.items():
        times = []
        service = None
        for _ in range(repeat):
            service = asyncio.run(identify_tcp(HOST, port))
            times.append(service.seconds)
        assert service is not None
        out[name] = {"service": service.name, "median_s": statistics.median(times),
                     "max_s": max(times)}
    return out


NMAP_SV_LIMIT = 300.0


def nmap_sv(nmap: str, port: int) -> float:
    """Seconds ``nmap -sV`` takes on one port (``NMAP_SV_LIMIT`` when it is stopped there)."""
    t0 = time.perf_counter()
    try:
        subprocess.run([nmap, "-sV", "-Pn", "-n", "-p", str(port), HOST], capture_output=True,
                       check=True, timeout=NMAP_SV_LIMIT)
    except subprocess.TimeoutExpired:
        return NMAP_SV_LIMIT
    return time.perf_counter() - t0


def tls_audit(ports: dict[str, int], repeat: int) -> dict[str, dict[str, float | int]]:
    trust = tls.TrustStore.of(others=tls.system_anchors())
    out: dict[str, dict[str, float | int]] = {}
    for name, port in ports.items():
        times = []
        findings = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            obs = asyncio.run(tls_probe.observe(HOST, port))
            findings = len(tls.assess(obs, now=datetime.now(UTC), trust=trust,
                                      location=Location.endpoint(HOST, port)))
            times.append(time.perf_counter() - t0)
        out[name] = {"median_s": statistics.median(times), "max_s": max(times),
                     "handshakes": obs.probes, "findings": findings}
    return out


def s_client_handshake(openssl: str, port: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([openssl, "s_client", "-connect", f"{HOST}:{port}"],
                       input=b"", capture_output=True, check=False, timeout=30)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def nmap_ssl_enum(nmap: str, port: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([nmap, "-Pn", "-n", "-p", str(port), "--script", "ssl-enum-ciphers",
                    HOST], capture_output=True, check=True, timeout=300)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round, no nmap -sV")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-nmap-sv", action="store_true", help="skip the slow nmap -sV runs")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    openssl = shutil.which("openssl")
    mosquitto = shutil.which("mosquitto")
    nmap = shutil.which("nmap")
    if openssl is None or mosquitto is None:
        print("openssl and mosquitto are needed", file=sys.stderr)
        return 2
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().machine} nproc={os.cpu_count()} "
          f"python {sys.version.split()[0]} load {os.getloadavg()[0]:.2f} "
          f"nmap {'yes' if nmap else 'not installed'}")
    results: dict[str, object] = {}

    print("## TCP connect scan of 65,535 ports on 127.0.0.1", flush=True)
    scan = port_scan(rounds, nmap)
    results["port_scan"] = scan
    ours_s = float(scan["ours_median_s"])  # type: ignore[arg-type]
    print(f"iotsec tcp_connect_scan (defaults)   {ours_s:8.3f} s  (median of {rounds})")
    scan_ok = True
    if "nmap_median_s" in scan:
        nmap_s = float(scan["nmap_median_s"])  # type: ignore[arg-type]
        scan_ok = ours_s <= nmap_s
        print(f"nmap -sT -p-                         {nmap_s:8.3f} s")
        print(f"ratio nmap / iotsec: {nmap_s / ours_s:.2f}x; open ports agree: {scan['agree']}"
              f"; goal (no slower than nmap): {'met' if scan_ok else 'MISSED'}")

    with tempfile.TemporaryDirectory(prefix="iotsec-scan-bench-") as tmp:
        d = Path(tmp)
        procs = srv.Processes()
        fakes = srv.FakeServers()
        try:
            weak_cert, weak_key = srv.expired_self_signed(d, "weak")
            good_key = d / "good.key"
            good_cert = d / "good.crt"
            subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(good_key),
                            "-out", str(good_cert), "-days", "365", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                           capture_output=True, check=True)
            tls_ports = {"tls_good": srv.free_port(), "tls_weak": srv.free_port()}
            procs.start(srv.s_server(openssl, tls_ports["tls_good"], good_cert, good_key),
                        d, tls_ports["tls_good"])
            procs.start(srv.s_server(openssl, tls_ports["tls_weak"], weak_cert, weak_key,
                                     "-cipher", "ALL:COMPLEMENTOFALL:@SECLEVEL=0",
                                     "-min_protocol", "TLSv1"), d, tls_ports["tls_weak"])
            mqtt_port = srv.free_port()
            conf = srv.mosquitto_conf(d, "anon", mqtt_port, anonymous=True)
            procs.start([mosquitto, "-c", str(conf)], d, mqtt_port)
            id_ports = {
                "ssh": fakes.tcp(srv.ssh_handler),
                "http": fakes.tcp(srv.http_page_handler(login_form=False)),
                "https (s_server)": tls_ports["tls_good"],
                "mqtt (mosquitto)": mqtt_port,
                "never answers": fakes.tcp(srv.silent_handler),
                "endless banner": fakes.tcp(srv.endless_handler),
                "TLS stalls mid-handshake": fakes.tcp(srv.tls_stall_handler),
            }
            print("\n## Service identification per open port", flush=True)
            ident = identification(id_ports, 3 if args.quick else 10)
            results["identification"] = ident
            worst = max(float(v["max_s"]) for v in ident.values())
            for name, v in ident.items():
                print(f"{name:<26} {v['service']:<8} median {float(v['median_s']):6.3f} s"
                      f"   max {float(v['max_s']):6.3f} s")
            id_ok = worst <= 2.0
            print(f"worst case {worst:.3f} s; goal (<= 2 s per port): "
                  f"{'met' if id_ok else 'MISSED'}")
            if nmap and not (args.quick or args.no_nmap_sv):
                sv = {name: nmap_sv(nmap, id_ports[name]) for name in ("http", "never answers")}
                results["nmap_sv_s"] = sv
                for name, seconds in sv.items():
                    shown = f">= {seconds:.0f}" if seconds >= NMAP_SV_LIMIT else f"{seconds:6.1f}"
                    print(f"reference nmap -sV, {name:<16} {shown} s "
                          f"({seconds / float(ident[name]['max_s']):.0f}x ours)")

            print("\n## TLS audit per endpoint", flush=True)
            audit = tls_audit(tls_ports, 3 if args.quick else 20)
            results["tls_audit"] = audit
            for name, v in audit.items():
                print(f"{name:<10} median {float(v['median_s']) * 1000:7.1f} ms   max "
                      f"{float(v['max_s']) * 1000:7.1f} ms   {v['handshakes']} handshakes, "
                      f"{v['findings']} findings")
            tls_ok = max(float(v["max_s"]) for v in audit.values()) <= 0.5
            print(f"goal (<= 0.5 s per endpoint): {'met' if tls_ok else 'MISSED'}")
            handshake = s_client_handshake(openssl, tls_ports["tls_good"], 5)
            results["openssl_s_client_s"] = handshake
            print(f"reference: one openssl s_client handshake (process) {handshake * 1000:.1f} ms")
            if nmap:
                enum = {n: nmap_ssl_enum(nmap, p) for n, p in tls_ports.items()}
                results["nmap_ssl_enum_ciphers_s"] = enum
                for name, seconds in enum.items():
                    print(f"reference: nmap --script ssl-enum-ciphers, {name:<8} "
                          f"{seconds:6.2f} s ({seconds / float(audit[name]['median_s']):.0f}x "
                          "ours)")
        finally:
            procs.stop()
            fakes.stop()
    ok = scan_ok and id_ok and tls_ok
    print("\ngoals met" if ok else "\nGOAL MISSED")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
