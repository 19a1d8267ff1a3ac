"""What the device-side tests do on a running ``iotsec serve``: the operator's setup (through
the ``iotsec`` command on the server's home: templates, enrolment secrets, claim CAs,
approvals) and the checks of a device's credential directory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from iotsec.device import EstClient
from iotsec.sdk.credentials import Pair, check_issued, load_ca, load_pair
from tests.enrol.asgi_est import Manufacturer
from tests.security.serving import Served


def operator(server: Served, *args: str) -> Any:
    """``iotsec ARGS --json`` on the server's home (what an operator runs once, at setup)."""
    done = server.iotsec(*args, "--json")
    assert done.returncode == 0, (args, done.stderr)
    return json.loads(done.stdout)


def template(server: Served, name: str, *options: str) -> None:
    operator(server, "enrol", "template", "add", name, *options)


def secret(server: Served, *, device: str | None = None, template: str | None = None,
           uses: int = 1) -> tuple[str, str]:
    """A new enrolment secret ``(id, secret)`` for ``device`` or ``template``."""
    bound = [device] if device is not None else ["--template", str(template)]
    made = operator(server, "enrol", "secret", "create", *bound, "--uses", str(uses))
    return made["id"], made["secret"]


def claim_ca(server: Served, name: str, template_name: str, tmp: Path) -> Manufacturer:
    """A manufacturer whose CA is registered as claim CA ``name`` for ``template_name``."""
    maker = Manufacturer.create(f"{name} factory CA")
    ca_file = tmp / f"{name}-ca.pem"
    ca_file.write_bytes(maker.pem)
    operator(server, "enrol", "claim-ca", "add", name, "--ca", str(ca_file), "--template",
             template_name)
    return maker


def claim_files(maker: Manufacturer, hardware_id: str, tmp: Path) -> tuple[Path, Path]:
    """A claim certificate and key for ``hardware_id``, as the factory put them on the
    device."""
    key, cert = maker.claim(hardware_id)
    cert_file, key_file = tmp / f"{hardware_id}-claim.crt", tmp / f"{hardware_id}-claim.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def usable_pair(directory: Path, server: Served) -> Pair:
    """The pair in ``directory``: the key matches, it chains to the CA now, and the EST
    server accepts it in a TLS handshake."""
    pair = load_pair(directory / "cert.pem", directory / "key.pem")
    assert pair is not None, sorted(p.name for p in directory.iterdir())
    check_issued(pair, load_ca(server.chain), datetime.now(UTC))
    EstClient(server.est_url, ca_file=server.chain).cacerts(
        client_cert=(directory / "cert.pem", directory / "key.pem"))
    return pair
