"""An example device: enrol over EST with a bootstrap secret, connect to the broker with
mutual TLS, publish telemetry, receive commands, and keep the certificate renewed over its
own mutual TLS. The device never holds an operator credential.

Against a local setup (``iotsec serve`` answers EST on https://127.0.0.1:8444)::

    iotsec ca chain > ca.pem                                 # the CA devices trust
    iotsec broker mosquitto render -o /srv/iotsec-broker --port 8883
    mosquitto -c /srv/iotsec-broker/mosquitto.conf &
    iotsec enrol template add sensors --id-from csr-cn       # devices get the role 'device'
    iotsec enrol secret create --template sensors --json     # gives its id and secret
    printf '%s' SECRET > secret.txt

    python examples/device.py --est https://127.0.0.1:8444 --ca ca.pem \\
        --secret-id ID --secret-file secret.txt --device sensor-1 \\
        --broker 127.0.0.1 --port 8883

The private key is made here and never leaves the device; the EST server sees only the CSR.
The secret is used once, to enrol; afterwards the certificate in ``--dir`` (default: the
device id) renews itself at about two thirds of its lifetime, and the MQTT connection is
re-established with each new certificate. Commands sent to ``commands/sensor-1/...`` are
printed. Telemetry goes to ``devices/sensor-1/telemetry``. Stop with Ctrl-C (or
``--count N``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from iotsec.device import (
    DeviceCertificate,
    DeviceClient,
    EnrolmentPending,
    Message,
    MqttError,
    MqttNotAuthorizedError,
    RenewalAgent,
    enrol,
)
from iotsec.errors import IotsecError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--est", required=True, help="EST server, e.g. https://127.0.0.1:8444")
    parser.add_argument("--ca", type=Path, required=True, help="CA chain ('iotsec ca chain')")
    parser.add_argument("--secret-id", help="enrolment secret id (first start only)")
    parser.add_argument("--secret-file", type=Path,
                        help="file holding the enrolment secret (first start only)")
    parser.add_argument("--label", help="EST label (a provisioning template's name)")
    parser.add_argument("--device", required=True,
                        help="device id, sent as the CSR's CN (a template may take it)")
    parser.add_argument("--broker", default="127.0.0.1", help="broker host name")
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--dir", type=Path, help="where the key and certificate live")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between readings")
    parser.add_argument("--count", type=int, default=0, help="stop after N readings")
    args = parser.parse_args()
    directory = args.dir or Path(args.device)

    def on_renewed(new: DeviceCertificate) -> None:
        print(f"renewed: certificate {new.serial} until {new.not_after:%Y-%m-%d}; "
              "reconnecting with it")
        client.reload()

    agent = RenewalAgent(directory, args.est, args.ca, label=args.label, on_renewed=on_renewed)
    try:
        current = agent.current()
    except IotsecError:
        if not args.secret_id or not args.secret_file:
            parser.error("the device is not enrolled yet: give --secret-id and --secret-file")
        secret = args.secret_file.read_text().strip()
        try:
            current = enrol(agent.client, dir=directory, ca_file=args.ca,
                            secret=(args.secret_id, secret), common_name=args.device)
        except EnrolmentPending as pending:
            sys.exit(f"{pending} ({pending.hint})")
        except IotsecError as exc:
            sys.exit(f"enrolment failed: {exc}")
        print(f"enrolled {current.device_id}: certificate {current.serial} until "
              f"{current.not_after:%Y-%m-%d}")

    def on_command(message: Message) -> None:
        print(f"command on {message.topic}: {message.payload.decode(errors='replace')}")

    client = DeviceClient.from_files(current.cert_file, current.key_file, args.ca,
                                     args.broker, args.port)
    device_id = client.device_id
    stop = threading.Event()
    renewer = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    client.connect()
    client.subscribe(f"commands/{device_id}/#", on_command)
    renewer.start()
    print(f"connected to {args.broker}:{args.port} as {device_id}")
    sent = 0
    try:
        while not args.count or sent < args.count:
            reading = {"t": round(20 + 5 * (time.time() % 60) / 60, 2), "at": int(time.time())}
            try:
                client.publish(f"devices/{device_id}/telemetry", json.dumps(reading))
                sent += 1
            except MqttNotAuthorizedError as exc:
                print(f"refused: {exc}")
            except MqttError as exc:
                print(f"not sent ({exc}); the client reconnects with backoff")
            if not args.count or sent < args.count:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        renewer.join(timeout=10)
        client.close()
    print(f"sent {sent} readings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
