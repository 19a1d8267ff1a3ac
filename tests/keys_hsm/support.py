"""Builders for the custody tests: devices with HS256 secrets, new (envelopes) and legacy
(the secret box), and ways to read them back."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import insert, select

from iotsec.app import device_tokens, devices
from iotsec.app.keys import open_device_secret
from iotsec.app.runtime import Runtime, read_passphrase
from iotsec.keys.secretbox import SecretBox
from iotsec.store import models as m
from iotsec.timeutil import ts
from tests.tokens.support import claims_for, sign


@dataclass(frozen=True)
class Secret:
    kid: str
    device_id: str
    secret: str


def add_devices(rt: Runtime, *ids: str) -> None:
    for device_id in ids:
        devices.add_device(rt, devices.NewDevice.parse(device_id))


def new_secret(rt: Runtime, device_id: str) -> Secret:
    kid, secret = device_tokens.create_secret(rt, device_id)
    return Secret(kid, device_id, secret)


def legacy_secret(rt: Runtime, device_id: str) -> Secret:
    """A row as iotsec wrote it before envelopes: sealed with the secret box."""
    box = SecretBox.load_or_create(rt.settings.keys_dir, read_passphrase(rt.settings))
    kid, secret = f"hs256-{secrets.token_hex(8)}", secrets.token_urlsafe(32)
    with rt.engine.begin() as conn:
        conn.execute(insert(m.device_secrets).values(
            kid=kid, device_id=device_id,
            ciphertext=box.seal(secret.encode(), device_tokens.secret_aad(kid, device_id)),
            created_at=ts(rt.now()), expires_at=None))
    return Secret(kid, device_id, secret)


def stored(rt: Runtime) -> dict[str, bytes]:
    with rt.engine.connect() as conn:
        rows = conn.execute(select(m.device_secrets.c.kid, m.device_secrets.c.ciphertext)).all()
    return {r.kid: bytes(r.ciphertext) for r in rows}


def assert_all_open(rt: Runtime, made: list[Secret]) -> None:
    values = stored(rt)
    for s in made:
        assert open_device_secret(rt, s.kid, s.device_id, values[s.kid]) == s.secret.encode()


def hs256_token(rt: Runtime, s: Secret) -> str:
    return sign(s.secret.encode(), s.kid, claims_for(s.device_id, ts(rt.now())))
