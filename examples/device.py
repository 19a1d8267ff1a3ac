"""An example device: enroll (CSR -> certificate), connect with mutual TLS, publish
telemetry, receive commands, renew the certificate before it expires.

Against a local setup (``make run`` serves the API on https://127.0.0.1:8443)::

    iotsec token create provisioning --scope operator      # prints TOKEN
    iotsec ca chain > ca.pem                                # the CA devices trust
    iotsec broker mosquitto render -o /srv/iotsec-broker --port 8883
    mosquitto -c /srv/iotsec-broker/mosquitto.conf &

    python examples/device.py --api https://127.0.0.1:8443 --token TOKEN --ca ca.pem \\
        --device sensor-1 --broker 127.0.0.1 --port 8883

The private key is made here and never leaves the device; the API only sees the CSR.
Commands sent to ``commands/sensor-1/...`` are printed. Telemetry goes to
``devices/sensor-1/telemetry``. Stop with Ctrl-C (or ``--count N``).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from iotsec.device import DeviceClient, Message, MqttError, MqttNotAuthorizedError


def api(url: str, token: str, ca: Path, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - the URL is https, checked by main()
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            return response.status, json.loads(response.read(256 * 1024))
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read(64 * 1024) or b"{}")


def enroll(args: argparse.Namespace, cert: Path, key_path: Path) -> None:
    """Register the device (if it is not yet) and get a certificate for a fresh key."""
    base = args.api.rstrip("/") + "/v1"
    status, body = api(f"{base}/devices", args.token, args.ca, {"id": args.device})
    if status not in (201, 409):
        sys.exit(f"registering {args.device} failed: {status} {body.get('detail', body)}")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.device)]))
           .sign(key, hashes.SHA256()))
    status, body = api(f"{base}/devices/{args.device}/certificates", args.token, args.ca,
                       {"csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
    if status != 201:
        sys.exit(f"enrollment failed: {status} {body.get('detail', body)}")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert.write_text(body["pem"])
    print(f"enrolled {args.device}: certificate {body['serial']} until {body['not_after']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True, help="iotsec API, e.g. https://127.0.0.1:8443")
    parser.add_argument("--token", default=os.environ.get("IOTSEC_TOKEN"),
                        help="operator API token (or IOTSEC_TOKEN)")
    parser.add_argument("--ca", type=Path, required=True, help="CA chain ('iotsec ca chain')")
    parser.add_argument("--device", required=True, help="device id")
    parser.add_argument("--broker", default="127.0.0.1", help="broker host name")
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--dir", type=Path, help="where the key and certificate live")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between readings")
    parser.add_argument("--count", type=int, default=0, help="stop after N readings")
    args = parser.parse_args()
    if not args.api.startswith("https://") or not args.token:
        parser.error("give an https:// --api and a --token")
    directory = args.dir or Path(args.device)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = directory / "device.crt", directory / "device.key"
    if not cert.exists():
        enroll(args, cert, key)

    def on_command(message: Message) -> None:
        print(f"command on {message.topic}: {message.payload.decode(errors='replace')}")

    client = DeviceClient.from_files(cert, key, args.ca, args.broker, args.port)
    client.connect()
    client.subscribe(f"commands/{args.device}/#", on_command)
    print(f"connected to {args.broker}:{args.port} as {client.device_id}")
    sent = 0
    try:
        while not args.count or sent < args.count:
            if client.renew_if_due(args.api, args.token):
                print(f"renewed: new certificate {client.serial} until {client.not_after}")
            reading = {"t": round(20 + 5 * (time.time() % 60) / 60, 2), "at": int(time.time())}
            try:
                client.publish(f"devices/{args.device}/telemetry", json.dumps(reading))
                sent += 1
            except MqttNotAuthorizedError as exc:
                print(f"refused: {exc}")
            except MqttError as exc:
                print(f"not sent ({exc}); the client reconnects with backoff")
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
