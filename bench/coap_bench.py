"""CoAP over DTLS: ``iotsec gateway coap`` beside libcoap's ``coap-server-openssl``.

Goals (issue 20): DTLS handshakes per second and CoAP requests per second on a resumed
session, against libcoap's own server serving the same request in the same run; publish
latency from CoAP to an MQTT subscriber p99 under 20 ms at 1,000 messages/s.

- Both servers get a P-256 server certificate from the same iotsec CA and require a client
  certificate from it; the client is the device SDK's ``CoapClient`` (pyOpenSSL) for both.
- Handshakes: sequential full handshakes (connect, close), and sequential resumed
  handshakes (``CoapClient.reconnect``: the session resumed, each one checked to be an
  abbreviated handshake, else the run stops), alternating between the servers in four
  rounds (the median round is reported). Requests, in four rounds the same way:
  confirmable ``PUT /ps/devices/<id>/t`` on a resumed session, one at a time
  (libcoap creates the resource with ``-d`` and answers 2.04 after that; the gateway decides
  it with the policy engine, checks the certificate's and the device's standing (from its
  per-process cache, read from the store again after ``IOTSEC_HOT_CACHE_SECONDS``), and
  publishes it to Mosquitto).
- Latency: non-confirmable publishes sent open loop at a fixed rate, each carrying its send
  time; an MQTT subscriber on the rendered Mosquitto takes the receive time. Reference: the
  same rate published directly to Mosquitto by an MQTT client (paho, QoS 1).

Run: ``python bench/coap_bench.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.enums import CallbackAPIVersion

from common import machine_info, print_machine, settings_for
from iotsec.access.policy import Role, Rule
from iotsec.app.access.roles import add_role
from iotsec.app.broker import mosquitto as service
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.authorities import chain_certificates, pem_of
from iotsec.app.pki.bundles import issue_with_keygen
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import init_home
from iotsec.broker.mosquitto import Layout
from iotsec.coap.message import Code, Message, MessageType, Option
from iotsec.device import CoapClient, DeviceClient
from iotsec.errors import CoapClientError
from iotsec.pki import x509 as enc
from iotsec.pki.issue import issue_server

_MAIN = "import sys; from iotsec.cli.main import main; sys.exit(main())"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_log(log: Path, proc: subprocess.Popen[bytes], text: bytes) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the process exited")
        if log.exists() and text in log.read_bytes():
            return
        time.sleep(0.02)
    raise RuntimeError("the process did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def libcoap_files(rt: Runtime, out: Path) -> tuple[Path, Path]:
    """A server certificate (chain) and clear key for coap-server-openssl."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = issue_server(rt.authority("issuing"), spki=enc.spki_der(key.public_key()),
                          common_name="localhost", dns_names=("localhost",),
                          ips=("127.0.0.1",), now=rt.now())
    cert, key_file = out / "libcoap.pem", out / "libcoap.key"
    cert.write_bytes(enc.to_pem(issued.der, "CERTIFICATE")
                     + pem_of(chain_certificates(rt)[:-1]).encode())
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, key_file


def handshakes(make: Callable[[], CoapClient], count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        c = make()
        c.connect()
        c.close()
    return count / (time.perf_counter() - t0)


def resumed_handshakes(make: Callable[[], CoapClient], count: int) -> float:
    c = make()
    c.connect()
    try:
        t0 = time.perf_counter()
        for _ in range(count):
            c.reconnect()
            if not c.resumed:
                raise RuntimeError("the server did not resume the session")
        return count / (time.perf_counter() - t0)
    finally:
        c.close()


def resumes(make: Callable[[], CoapClient]) -> str | None:
    """None when the server resumes a session, else what happens instead."""
    c = make()
    try:
        c.connect()
        c.reconnect()
        return None if c.resumed else "a full handshake instead"
    except CoapClientError as exc:
        return f"the resumed handshake fails: {exc}"
    finally:
        c.close()


def requests(make: Callable[[], CoapClient], path: str, count: int, resume: bool) -> float:
    c = make()
    c.connect()
    if resume:
        c.reconnect()
        if not c.resumed:
            raise RuntimeError("the server did not resume the session")
    try:
        first = c.request(Code.PUT, path, b"0")
        if first is None or first.code not in (Code.CREATED, Code.CHANGED):
            raise RuntimeError(f"unexpected answer {first}")
        t0 = time.perf_counter()
        for i in range(count):
            r = c.request(Code.PUT, path, str(i).encode())
            if r is None or r.code != Code.CHANGED:
                raise RuntimeError(f"unexpected answer {r}")
        return count / (time.perf_counter() - t0)
    finally:
        c.close()


def paho_publisher(creds: Path, port: int) -> mqtt.Client:
    """Device bench-2's MQTT session, the reference publisher."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-2",
                         protocol=mqtt.MQTTv5)
    ctx = ssl.create_default_context(cafile=str(creds / "ca.pem"))
    ctx.load_cert_chain(str(creds / "bench-2.crt"), str(creds / "bench-2.key"))
    client.tls_set_context(ctx)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(5):
        raise RuntimeError("the reference publisher did not connect")
    return client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(send: Callable[[int, bytes], None], subscriber: DeviceClient, topic: str,
            rate: int, seconds: float) -> dict[str, float]:
    got: dict[int, float] = {}
    sent: dict[int, float] = {}
    done = threading.Event()
    total = int(rate * seconds)

    def on_message(message: object) -> None:
        payload = message.payload  # type: ignore[attr-defined]
        got[int(payload)] = time.perf_counter()
        if len(got) >= total:
            done.set()

    subscriber.subscribe(topic, on_message)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(0.0005, due - now))
        sent[i] = time.perf_counter()
        send(i, str(i).encode())
    done.wait(5)
    lat = [(got[i] - sent[i]) * 1000 for i in sent if i in got]
    return {"sent": total, "received": len(lat),
            "p50_ms": statistics.median(lat) if lat else float("nan"),
            "p99_ms": percentile(lat, 0.99) if lat else float("nan"),
            "max_ms": max(lat) if lat else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=100)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for tool in ("mosquitto", "coap-server-openssl"):
        if shutil.which(tool) is None:
            print(f"needs {tool}", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="iotsec-b-", dir="/tmp"))
    tmp.chmod(0o711)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        home = tmp / "home"
        init_home(settings_for(home), store_passphrase=True)
        rt = open_runtime(settings_for(home))
        add_role(rt, Role.build("dashboard", [Rule.parse("allow", "subscribe", "devices/#"),
                                              Rule.parse("allow", "receive", "devices/#")]))
        creds = tmp / "creds"
        creds.mkdir()
        for name, roles in (("bench-1", None), ("bench-2", None), ("dash", ("dashboard",))):
            add_device(rt, NewDevice.parse(name, roles=roles))
            bundle = issue_with_keygen(rt, name, p12_passphrase=b"not-used-here")
            (creds / f"{name}.crt").write_text(bundle.certificate.pem)
            (creds / f"{name}.key").write_bytes(bundle.key_pem)
            (creds / "ca.pem").write_text(bundle.chain_pem)
        mqtt_port = free_port()
        broker_dir = tmp / "broker"
        service.render(rt, broker_dir, service.BrokerOptions(
            port=mqtt_port, broker_user=service.default_broker_user()))
        layout = Layout.parse(broker_dir)
        mosq = subprocess.Popen(["mosquitto", "-c", str(layout.conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(mosq)
        wait_log(layout.log_file, mosq, b" running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
        env["IOTSEC_HOME"] = str(home)
        gw = subprocess.Popen([sys.executable, "-c", _MAIN, "gateway", "coap", "--port", "0",
                               "--mqtt-port", str(mqtt_port), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(gw)
        assert gw.stdout is not None
        text = b""
        while not text.endswith(b"}\n"):
            line = gw.stdout.readline()
            if not line:
                raise RuntimeError("the gateway did not start")
            text += line
        ours_port = int(json.loads(text)["port"])
        lib_cert, lib_key = libcoap_files(rt, tmp)
        base = free_port(socket.SOCK_DGRAM)
        lib = subprocess.Popen(["coap-server-openssl", "-A", "127.0.0.1", "-p", str(base),
                                "-c", str(lib_cert), "-j", str(lib_key), "-R",
                                str(creds / "ca.pem"), "-d", "10", "-v", "0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(lib)
        # The reference for resumed handshakes when libcoap's server does not resume:
        # OpenSSL's own DTLS server with the same certificate, client certificates required,
        # and (-listen) the cookie exchange the gateway makes too.
        ossl_port = free_port(socket.SOCK_DGRAM)
        ossl = subprocess.Popen(["openssl", "s_server", "-dtls1_2", "-accept", str(ossl_port),
                                 "-cert", str(lib_cert), "-key", str(lib_key), "-CAfile",
                                 str(creds / "ca.pem"), "-Verify", "1", "-listen",
                                 "-quiet"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(ossl)
        time.sleep(0.5)

        def client_for(port: int) -> Callable[[], CoapClient]:
            return lambda: CoapClient.from_files(creds / "bench-1.crt", creds / "bench-1.key",
                                                 creds / "ca.pem", "127.0.0.1", port,
                                                 timeout=5.0)

        ours, ref = client_for(ours_port), client_for(base + 1)
        plain_dtls = client_for(ossl_port)
        path = "ps/devices/bench-1/t"
        if resumes(ours) is not None:
            raise RuntimeError(f"the gateway does not resume sessions: {resumes(ours)}")
        lib_resumption = resumes(ref)
        hs_ours: list[float] = []
        hs_ref: list[float] = []
        rs_ours: list[float] = []
        rs_ref: list[float] = []
        rs_ossl: list[float] = []
        for _ in range(4):  # interleaved rounds
            hs_ours.append(handshakes(ours, args.handshakes // 4))
            hs_ref.append(handshakes(ref, args.handshakes // 4))
            rs_ours.append(resumed_handshakes(ours, args.handshakes // 4))
            if lib_resumption is None:
                rs_ref.append(resumed_handshakes(ref, args.handshakes // 4))
            rs_ossl.append(resumed_handshakes(plain_dtls, args.handshakes // 4))
        rq_ours, rq_ref = [], []
        for _ in range(4):  # interleaved rounds too: the shared machine's load moves
            rq_ours.append(requests(ours, path, args.requests // 4, True))
            rq_ref.append(requests(ref, path, args.requests // 4, lib_resumption is None))

        sub = DeviceClient.from_files(creds / "dash.crt", creds / "dash.key", creds / "ca.pem",
                                      "127.0.0.1", mqtt_port)
        sub.connect()
        coap = ours()
        coap.connect()
        options = tuple((int(Option.URI_PATH), p.encode()) for p in path.split("/"))

        def send_coap(i: int, payload: bytes) -> None:
            coap.send_datagram(Message(MessageType.NON, Code.POST, i & 0xFFFF, b"\x01",
                                       options, payload).encode())

        lat_coap = latency(send_coap, sub, "devices/bench-1/t", args.rate, args.seconds)
        coap.close()
        pub = paho_publisher(creds, mqtt_port)
        lat_mqtt = latency(lambda i, p: pub.publish("devices/bench-2/m", p, qos=1), sub,
                           "devices/bench-2/m", args.rate, args.seconds)
        pub.disconnect()
        pub.loop_stop()
        sub.close()
        rt.close()
        rq_o, rq_r = statistics.median(rq_ours), statistics.median(rq_ref)
        result = {
            "machine": machine_info(),
            "handshakes_per_s": {"ours": statistics.median(hs_ours),
                                 "libcoap": statistics.median(hs_ref)},
            "resumed_handshakes_per_s": {
                "ours": statistics.median(rs_ours),
                "libcoap": statistics.median(rs_ref) if rs_ref else None,
                "openssl_s_server": statistics.median(rs_ossl)},
            "libcoap_resumption": lib_resumption or "resumes",
            "requests_per_s": {"ours": rq_o, "libcoap": rq_r},
            "coap_to_mqtt": lat_coap, "mqtt_to_mqtt": lat_mqtt,
        }
        if args.json:
            print(json.dumps(result, indent=2))
            return 0
        print_machine(result["machine"])
        h = result["handshakes_per_s"]
        print(f"DTLS handshakes/s (sequential, one client): ours {h['ours']:.0f}  "
              f"libcoap {h['libcoap']:.0f}  ratio {h['ours'] / h['libcoap']:.2f}")
        r = result["resumed_handshakes_per_s"]
        print(f"DTLS resumed handshakes/s (sequential, one client): ours {r['ours']:.0f}  "
              f"openssl s_server {r['openssl_s_server']:.0f}  "
              f"ratio {r['ours'] / r['openssl_s_server']:.2f}")
        if r["libcoap"] is not None:
            print(f"  libcoap {r['libcoap']:.0f}  ratio {r['ours'] / r['libcoap']:.2f}")
        else:
            print(f"  libcoap does not resume ({lib_resumption}); ours resumed / libcoap "
                  f"full: {r['ours'] / h['libcoap']:.2f}")
        print(f"CoAP requests/s on a resumed session (CON, one at a time): ours {rq_o:.0f}  "
              f"libcoap {rq_r:.0f}  ratio {rq_o / rq_r:.2f}")
        for name, lat in (("CoAP -> MQTT (gateway)", lat_coap),
                          ("MQTT -> MQTT (reference)", lat_mqtt)):
            print(f"{name} at {args.rate}/s for {args.seconds:g} s: received "
                  f"{lat['received']}/{lat['sent']}, p50 {lat['p50_ms']:.1f} ms, "
                  f"p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms (goal p99 < 20 ms)")
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
