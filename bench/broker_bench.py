"""Secure-MQTT goals: Mosquitto driven by iotsec.

Goal 1: render + validate + reload for a fleet of 100,000 devices (ACL + CRL) in < 10 s.
  Setup (not timed): a fresh home with N devices (default role), one valid certificate
  each (rows inserted directly), 10 % of them revoked, 1 % disabled and 1 % holding an
  extra "gateway" role (so the ACL has real per-device blocks besides the pattern lines),
  a rendered broker directory and a running ``mosquitto`` on it.
  Ours: ``iotsec.app.broker.mosquitto.sync`` end to end (a revocation before each round makes the
  CRL stale, so every round rebuilds and re-signs it): build ACL + CRL, validate (CRL
  checks, ACL reader, dry run of the real mosquitto), swap, SIGHUP, wait for the reload,
  confirm with the probe and canary certificates, end the revoked device's session.
  Reference, same run: Mosquitto's own cold start on the same files (exec to "running").

Goal 2: message throughput through the mutual-TLS broker with the generated ACL >= 0.8x
  the same broker without an ACL, in the same run.
  Two brokers on the same rendered files, one with ``acl_file``, one without (everything
  else identical). P devices publish M messages each (``mosquitto_pub -l -q 1`` over
  mutual TLS) to ``devices/<id>/telemetry``; a gateway device (role with subscribe/receive
  on ``devices/+/telemetry``) receives them all (``mosquitto_sub -C P*M``). Time from the
  publishers' start to the last message received; rounds interleaved, medians compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from common import machine_info, print_machine, settings_for
from iotsec.access.policy import Role, Rule
from iotsec.app.access.roles import add_role
from iotsec.app.broker import mosquitto as service
from iotsec.app.identity.bindings import assign_roles
from iotsec.app.identity.devices import NewDevice, import_devices
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.broker.mosquitto import Layout
from iotsec.pki.crl import RevocationReason, encode_entry
from iotsec.pki.serial import format_serial, random_serial
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import from_ts, ts


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seeded_home(work: Path, count: int) -> Runtime:
    """A fresh home in ``work/home`` with :func:`seed`'s ``count`` devices, open."""
    settings = settings_for(work / "home")
    init_home(settings, store_passphrase=True)
    rt = open_runtime(settings)
    seed(rt, count)
    return rt


def seed(rt: Runtime, count: int) -> None:
    """N devices with one certificate row each; 10 % revoked, 1 % disabled, 1 % gateways."""
    t0 = time.perf_counter()
    import_devices(rt, (NewDevice.parse(f"dev-{i:06d}") for i in range(count)))
    template = issue_with_keygen(rt, "dev-000000", p12_passphrase=b"bench-only").certificate
    now = ts(rt.now())
    authority = rt.issuing_id()
    rows = []
    for i in range(1, count):
        serial = random_serial()
        revoked = i % 10 == 0
        moment = now - 3600
        rows.append({
            "serial": format_serial(serial), "authority_id": authority,
            "device_id": f"dev-{i:06d}", "kind": "device", "profile": "device",
            "subject": f"dev-{i:06d}", "not_before": now - 86400,
            "not_after": now + 300 * 86400, "sha256": hashlib.sha256(
                serial.to_bytes(20, "big")).hexdigest(), "der": template.der,
            "created_at": now, "revoked_at": moment if revoked else None,
            "revocation_reason": 1 if revoked else None,
            "crl_entry": encode_entry(serial, from_ts(moment), RevocationReason.keyCompromise)
            if revoked else None, "replaced_by": None})
    with transaction(rt.engine) as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(m.certificates), rows[i:i + 5000])
        conn.execute(update(m.crls).values(stale=True))
        disabled = [f"dev-{i:06d}" for i in range(1, count) if i % 100 == 1]
        for i in range(0, len(disabled), 500):
            conn.execute(update(m.devices).where(m.devices.c.id.in_(disabled[i:i + 500]))
                         .values(state="disabled"))
    add_role(rt, Role.build("gateway", [
        Rule.parse("allow", "subscribe", "devices/+/telemetry"),
        Rule.parse("allow", "receive", "devices/+/telemetry")]))
    gateways = [f"dev-{i:06d}" for i in range(1, count) if i % 100 == 2]
    with transaction(rt.engine) as conn:
        assign_roles(conn, gateways, ["gateway"])
    print(f"# seeded {count:,} devices, {count // 10:,} revoked, {len(disabled):,} disabled, "
          f"{len(gateways):,} gateways in {time.perf_counter() - t0:.1f} s", flush=True)


class Broker:
    def __init__(self, conf: Path, log: Path) -> None:
        self.conf, self.log = conf, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        offset = self.log.stat().st_size if self.log.exists() else 0
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited on {self.conf}")
            try:
                with self.log.open("rb") as fh:
                    fh.seek(offset)
                    if b" running" in fh.read():
                        return time.perf_counter() - t0
            except FileNotFoundError:
                pass
            time.sleep(0.005)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def goal_render(rt: Runtime, layout: Layout, rounds: int) -> dict[str, Any]:
    broker = Broker(layout.conf, layout.log_file)
    ours: list[float] = []
    cold: list[float] = []
    parts: list[dict[str, float]] = []
    try:
        broker.start()
        for r in range(rounds):
            # A fresh revocation: the CRL is stale and is rebuilt inside the timed sync.
            victim = issue_with_keygen(rt, f"dev-{r + 3:06d}", p12_passphrase=b"bench-only")
            revoke(rt, victim.certificate.serial)
            t0 = time.perf_counter()
            result = service.sync(rt, layout.root, pid=broker.proc.pid if broker.proc else None)
            ours.append(time.perf_counter() - t0)
            parts.append(result.seconds)
            assert result.confirmed
            broker.stop()
            cold.append(broker.start())
            print(f"# round {r + 1}: sync {ours[-1]:.2f} s {result.seconds}; mosquitto cold "
                  f"start {cold[-1]:.2f} s; ACL {result.pattern_lines} patterns + "
                  f"{result.user_blocks} user blocks, CRL #{result.crl_number}", flush=True)
    finally:
        broker.stop()
    acl = (layout.current / "acl").stat().st_size
    crl = (layout.current / "crl.pem").stat().st_size
    return {"sync_s": statistics.median(ours), "cold_start_s": statistics.median(cold),
            "parts": parts[len(parts) // 2], "acl_bytes": acl, "crl_pem_bytes": crl}


def _tls(args_dir: Path, device: str, port: int) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(port), "--cafile", str(args_dir / "ca.pem"),
            "--cert", str(args_dir / f"{device}.crt"), "--key", str(args_dir / f"{device}.key")]


def one_run(port: int, creds: Path, publishers: list[str], gateway: str, per: int) -> float:
    total = per * len(publishers)
    sub = subprocess.Popen(["mosquitto_sub", *_tls(creds, gateway, port), "-q", "1", "-C",
                            str(total), "-t", "devices/+/telemetry"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    payload = ("x" * 64 + "\n") * per
    t0 = time.perf_counter()
    pubs = [subprocess.Popen(["mosquitto_pub", *_tls(creds, p, port), "-q", "1", "-l", "-t",
                              f"devices/{p}/telemetry"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for p in publishers]
    for p in pubs:
        assert p.stdin is not None
        p.stdin.write(payload.encode())
        p.stdin.close()
    try:
        sub.wait(timeout=120)
    except subprocess.TimeoutExpired:
        sub.kill()
        raise RuntimeError("the subscriber did not receive every message") from None
    elapsed = time.perf_counter() - t0
    for p in pubs:
        p.wait(30)
    if sub.returncode != 0:
        raise RuntimeError(f"mosquitto_sub failed: {sub.stderr.read().decode()[-300:]}"
                           if sub.stderr else "mosquitto_sub failed")
    return total / elapsed


def goal_throughput(rt: Runtime, layout: Layout, work: Path, rounds: int, per: int,
                    publisher_count: int) -> dict[str, Any]:
    creds = work / "creds"
    creds.mkdir()
    (creds / "ca.pem").write_text(issue_with_keygen(rt, "dev-000000", p12_passphrase=b"bench-only"
                                                    ).chain_pem)
    names = [f"dev-{i:06d}" for i in range(11, 11 + 10 * publisher_count, 10)]
    gateway = "dev-000102"
    for name in [*names, gateway]:
        bundle = issue_with_keygen(rt, name, p12_passphrase=b"bench-only")
        (creds / f"{name}.crt").write_text(bundle.certificate.pem)
        (creds / f"{name}.key").write_bytes(bundle.key_pem)
    service.sync(rt, layout.root)  # no broker running: files only
    port_acl, port_none = free_port(), free_port()
    conf = layout.conf.read_text()
    confs = {}
    for label, port, text in (("acl", port_acl, conf), ("no-acl", port_none, "\n".join(
            ln for ln in conf.splitlines() if not ln.startswith("acl_file")) + "\n")):
        text = text.replace(f"listener {service.options_of(layout).port} ",
                            f"listener {port} ")
        text = text.replace(str(layout.admin_socket), str(layout.run / f"{label}.sock"))
        text = text.replace(str(layout.pid_file), str(layout.run / f"{label}.pid"))
        text = text.replace(f"persistence_location {layout.run}/", "persistence false\n#")
        text = text.replace(str(layout.log_file), str(layout.run / f"{label}.log"))
        # Both brokers queue without limit, so that no QoS 1 message is dropped when the
        # publishers outrun the subscriber (Mosquitto's default queue is 1,000 messages).
        text = text.replace("per_listener_settings false\n",
                            "per_listener_settings false\nmax_queued_messages 0\n")
        path = layout.root / f"bench-{label}.conf"
        path.write_text(text)
        shutil.copymode(layout.conf, path)
        os.chown(path, -1, layout.conf.stat().st_gid)
        confs[label] = (path, port)
    results: dict[str, list[float]] = {"acl": [], "no-acl": []}
    for r in range(rounds):
        for label in ("acl", "no-acl") if r % 2 == 0 else ("no-acl", "acl"):
            path, port = confs[label]
            broker = Broker(path, layout.run / f"{label}.log")
            try:
                broker.start()
                results[label].append(one_run(port, creds, names, gateway, per))
            finally:
                broker.stop()
        print(f"# round {r + 1}: with ACL {results['acl'][-1]:,.0f} msg/s, without "
              f"{results['no-acl'][-1]:,.0f} msg/s", flush=True)
    with_acl = statistics.median(results["acl"])
    without = statistics.median(results["no-acl"])
    return {"with_acl_msgs": with_acl, "without_acl_msgs": without,
            "ratio": with_acl / without, "messages": per * len(names),
            "publishers": len(names)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 devices, fewer messages")
    parser.add_argument("--count", type=int, help="devices (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, help="messages per publisher (default 20,000)")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_pub") is None:
        print("needs mosquitto and mosquitto-clients", file=sys.stderr)
        return 2
    count = args.count or (10_000 if args.quick else 100_000)
    per = args.messages or (2_000 if args.quick else 20_000)
    print_machine(machine_info())
    work = Path(tempfile.mkdtemp(prefix="iotsec-bb-", dir="/tmp"))
    work.chmod(0o711)
    try:
        rt = seeded_home(work, count)
        broker_dir = work / "broker"
        t0 = time.perf_counter()
        first = service.render(rt, broker_dir, service.BrokerOptions(
            port=free_port(), broker_user=service.default_broker_user()))
        print(f"# first render {time.perf_counter() - t0:.2f} s: {first.pattern_lines} "
              f"pattern lines, {first.user_blocks} user blocks, {first.blocked} blocked",
              flush=True)
        layout = Layout.parse(broker_dir)
        render = goal_render(rt, layout, args.rounds)
        throughput = goal_throughput(rt, layout, work, args.rounds, per, args.publishers)
        rt.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nGoal 1 ({count:,} devices): sync (render + validate + reload + confirm) "
          f"{render['sync_s']:.2f} s, goal < 10 s: {'MET' if render['sync_s'] < 10 else 'MISSED'}")
    print(f"  reference: mosquitto cold start on the same files {render['cold_start_s']:.2f} s "
          f"(ratio ours/reference {render['sync_s'] / render['cold_start_s']:.1f}); "
          f"parts {render['parts']}; ACL {render['acl_bytes']:,} B, "
          f"CRL {render['crl_pem_bytes']:,} B")
    print(f"Goal 2: {throughput['messages']:,} QoS 1 messages from "
          f"{throughput['publishers']} publishers to one gateway: with ACL "
          f"{throughput['with_acl_msgs']:,.0f} msg/s, without {throughput['without_acl_msgs']:,.0f}"
          f" msg/s, ratio {throughput['ratio']:.2f}, goal >= 0.8: "
          f"{'MET' if throughput['ratio'] >= 0.8 else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"render": render, "throughput": throughput,
                                         "devices": count}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
