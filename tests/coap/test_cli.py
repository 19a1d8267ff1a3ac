"""``iotsec gateway coap`` as a process: it prints where it listens (``--json``), serves a
real client, stops cleanly on SIGTERM, and refuses bad input with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.coap.conftest import Fleet
from tests.coap.support import coap_client
from tests.coap.test_gateway import _codes

_MAIN = "import sys; from iotsec.cli.main import main; sys.exit(main())"


def _env(fleet: Fleet) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env["IOTSEC_HOME"] = str(fleet.rt.settings.resolved_home)
    if fleet.rt.settings.database_url is not None:
        env["IOTSEC_DATABASE_URL"] = str(fleet.rt.settings.database_url)
    return env


def test_the_command_serves_until_sigterm(fleet: Fleet, coap_client_bin: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "gateway", "coap", "--port", "0", "--mqtt-port",
         str(fleet.mqtt_port), "--json"], env=_env(fleet), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line)
        listening = json.loads("".join(lines))
        assert listening["protocol"] == "coap+dtls" and listening["bind"] == "127.0.0.1"
        alice = fleet.alice
        answer = coap_client(coap_client_bin,
                             f"coaps://127.0.0.1:{listening['port']}/ps/devices/alice/x",
                             method="post", payload="1", cert=alice.cert, key=alice.key,
                             ca=alice.ca)
        assert _codes(answer) == ["2.04"], answer
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(10)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def test_bad_input_is_refused_with_one_line(fleet: Fleet, tmp_path: Path) -> None:
    for args, says in ((["--bind", "localhost"], "not an IP address"),
                       (["--port", "70000"], "out of range"),
                       (["--mqtt-port", "1"], "is not reachable")):
        done = subprocess.run([sys.executable, "-c", _MAIN, "gateway", "coap", "--port", "0",
                               *args], env=_env(fleet), capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 1, done
        assert done.stderr.startswith("iotsec: error:") and says in done.stderr, done
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_oscore_context_is_provisioned_once(fleet: Fleet, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    public = tmp_path / "alice-oscore.pub"
    public.write_bytes(x25519.X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    args = [sys.executable, "-c", _MAIN, "coap", "oscore", "context", "alice",
            "--device-public", str(public)]
    done = subprocess.run([*args, "--json"], env=_env(fleet), capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done
    out = json.loads(done.stdout)
    assert out["device_id"] == "alice" and out["key_type"] == "x25519"
    assert len(bytes.fromhex(out["device_sender_id"])) == 4 and len(out["salt"]) == 32
    assert out["gateway_public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert out["algorithm"] == "AES-CCM-16-64-128"
    again = subprocess.run(args, env=_env(fleet), capture_output=True, text=True, timeout=30,
                           check=False)
    assert again.returncode == 1 and "already has an OSCORE context" in again.stderr
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    removed = subprocess.run([sys.executable, "-c", _MAIN, "coap", "oscore", "remove", "alice"],
                             env=_env(fleet), capture_output=True, text=True, timeout=30,
                             check=False)
    assert removed.returncode == 0, removed


def test_edhoc_credential_is_printed_once_the_gateway_has_its_key(fleet: Fleet) -> None:
    from iotsec.app.coap.oscore_contexts import edhoc_credential

    args = [sys.executable, "-c", _MAIN, "coap", "edhoc", "credential", "--json"]
    missing = subprocess.run(args, env=_env(fleet), capture_output=True, text=True,
                             timeout=30, check=False)
    assert missing.returncode == 1 and "iotsec gateway coap --oscore-port" in missing.stderr
    expected = edhoc_credential(fleet.rt)
    done = subprocess.run(args, env=_env(fleet), capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["ccs"] == expected.hex()
