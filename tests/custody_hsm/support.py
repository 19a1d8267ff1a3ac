"""Builders for the custody tests: devices with HS256 secrets (record envelopes), and ways
to read them back."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from iotsec.app.custody.keys import open_device_secret
from iotsec.app.identity import device_tokens, devices
from iotsec.app.runtime import Runtime
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
