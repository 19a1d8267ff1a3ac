"""Quarantine goal: from ``incident quarantine`` to a dropped live session, after which the
device can reach only its remediation topic: under 5 s on the real Mosquitto.

Setup (not timed): a fresh home with N devices (rows inserted directly, as in
broker_bench.py), a rendered broker directory and a running ``mosquitto`` on it; per
round, one more device with a real certificate, connected with the device SDK and
publishing on its own topic.

Ours, per round: ``quarantine_devices`` for that device (the store transaction with its
incident, alert and events, then the broker sync: ACL and CRLs rebuilt for the fleet,
validated with the real mosquitto, swapped, SIGHUP, reload confirmed with the probe and
canary, the session taken over and dropped). Timed until the device's connection is seen
closed (``dropped``), and until a new connection of the device has published on
``quarantine/<id>/status`` (PUBACK 0) and been refused ``devices/<id>/telemetry`` (PUBACK
0x87) (``contained``). The device is then released (not timed).

Reference, same run: the blunt way to end a live session on Mosquitto without a takeover,
a broker restart (SIGTERM, start, wait for "running"), timed until the device's connection
is seen closed and a new connection has published. The ratio compares ``contained`` with
it: both include one new connection of the device SDK.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from broker_bench import Broker, free_port, seeded_home
from common import machine_info, print_machine
from iotsec.app.broker import mosquitto as service
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.monitor.quarantine import quarantine_devices, release_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.device import DeviceClient, MqttNotAuthorizedError


def _device(rt: Runtime, work: Path, device_id: str) -> tuple[Path, Path, Path]:
    add_device(rt, NewDevice.parse(device_id))
    bundle = issue_with_keygen(rt, device_id, p12_passphrase=b"bench-only")
    cert, key, ca = work / f"{device_id}.crt", work / f"{device_id}.key", work / "ca.pem"
    cert.write_text(bundle.certificate.pem)
    key.write_bytes(bundle.key_pem)
    ca.write_text(bundle.chain_pem)
    return cert, key, ca


def _client(files: tuple[Path, Path, Path], port: int) -> DeviceClient:
    # No automatic reconnection: the bench reconnects itself, at once, as a device would.
    return DeviceClient.from_files(*files, "127.0.0.1", port, timeout=3.0, min_backoff=60,
                                   max_backoff=60)


def _wait_closed(client: DeviceClient, limit: float = 30.0) -> None:
    deadline = time.perf_counter() + limit
    while client.connected:
        if time.perf_counter() > deadline:
            raise RuntimeError("the session was not dropped")
        time.sleep(0.002)


def _allowed(client: DeviceClient, topic: str) -> bool:
    try:
        client.publish(topic, b"x", qos=1)
    except MqttNotAuthorizedError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 devices")
    parser.add_argument("--count", type=int, help="devices (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if shutil.which("mosquitto") is None:
        print("needs mosquitto", file=sys.stderr)
        return 2
    count = args.count or (1_000 if args.quick else 10_000)
    print_machine(machine_info())
    work = Path(tempfile.mkdtemp(prefix="iotsec-q-", dir="/tmp"))
    work.chmod(0o711)
    dropped: list[float] = []
    contained: list[float] = []
    reference: list[float] = []
    parts: list[dict[str, float]] = []
    try:
        rt = seeded_home(work, count)
        port = free_port()
        service.render(rt, work / "broker", service.BrokerOptions(
            port=port, broker_user=service.default_broker_user()))
        layout = Layout.parse(work / "broker")
        broker = Broker(layout.conf, layout.log_file)
        try:
            broker.start()
            for r in range(args.rounds):
                device_id = f"victim-{r}"
                files = _device(rt, work, device_id)
                service.sync(rt, layout.root)
                client = _client(files, port)
                client.connect()
                assert _allowed(client, f"devices/{device_id}/telemetry")
                t0 = time.perf_counter()
                result = quarantine_devices(rt, Selector.parse([device_id]), reason="bench",
                                            actor="bench", broker_dir=layout.root)
                t1 = time.perf_counter()
                _wait_closed(client)
                t2 = time.perf_counter()
                client.close()
                again = _client(files, port)
                again.connect()
                assert _allowed(again, f"quarantine/{device_id}/status")
                assert not _allowed(again, f"devices/{device_id}/telemetry")
                t3 = time.perf_counter()
                again.close()
                assert result.kicked == (device_id,)
                dropped.append(t2 - t0)
                contained.append(t3 - t0)
                parts.append({"service_s": round(t1 - t0, 3), "close_seen_s": round(t2 - t1, 3),
                              "reconnect_and_check_s": round(t3 - t2, 3)})
                release_devices(rt, [device_id], actor="bench", broker_dir=layout.root)
                # Reference: drop the same live session by restarting the broker.
                client = _client(files, port)
                client.connect()
                r0 = time.perf_counter()
                broker.stop()
                broker.start()
                _wait_closed(client)
                client.close()
                again = _client(files, port)
                again.connect()
                assert _allowed(again, f"devices/{device_id}/telemetry")
                reference.append(time.perf_counter() - r0)
                again.close()
                print(f"# round {r + 1}: dropped {dropped[-1]:.3f} s, contained "
                      f"{contained[-1]:.3f} s ({parts[-1]}); broker restart "
                      f"{reference[-1]:.3f} s", flush=True)
        finally:
            broker.stop()
            rt.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    drop, cont, ref = (statistics.median(dropped), statistics.median(contained),
                       statistics.median(reference))
    print(f"\nGoal ({count:,} devices): quarantine -> session dropped {drop:.2f} s, -> only the "
          f"remediation topic reachable {cont:.2f} s, goal < 5 s: "
          f"{'MET' if cont < 5 else 'MISSED'}")
    print(f"  reference: a broker restart drops the session and lets it back in "
          f"{ref:.2f} s (ratio contained/reference {cont / ref:.2f}); parts "
          f"{parts[len(parts) // 2]}")
    if args.json:
        args.json.write_text(json.dumps({"devices": count, "dropped_s": drop,
                                         "contained_s": cont, "restart_s": ref,
                                         "parts": parts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
