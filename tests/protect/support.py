"""Keys and pairs shared by the data-protection tests."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from iotsec.protect.pairing import (
    AgreementPrivateKey,
    Algorithm,
    PairContext,
    establish,
    new_salt,
)
from iotsec.protect.payload import Keyring
from iotsec.protect.replay import ReplayWindow

DEVICE = "dev-0001"
APP = "app:telemetry"


def agreement_key(curve: str) -> AgreementPrivateKey:
    if curve == "x25519":
        return x25519.X25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Pair:
    """Both sides of a device/application pair, with the receivers' state."""

    device_key: AgreementPrivateKey
    app_key: AgreementPrivateKey
    salt: bytes
    device: PairContext
    app: PairContext
    app_ring: Keyring
    device_ring: Keyring
    app_window: ReplayWindow
    device_window: ReplayWindow


def make_pair(curve: str = "x25519", alg: Algorithm = Algorithm.A256GCM,
              salt: bytes | None = None) -> Pair:
    device_key, app_key = agreement_key(curve), agreement_key(curve)
    salt = salt or new_salt()
    device = establish(device_key, app_key.public_key(), own_id=DEVICE, peer_id=APP,
                       salt=salt, alg=alg)
    app = establish(app_key, device_key.public_key(), own_id=APP, peer_id=DEVICE, salt=salt,
                    alg=alg)
    return Pair(device_key, app_key, salt, device, app, Keyring([app.receive]),
                Keyring([device.receive]), ReplayWindow(), ReplayWindow())
