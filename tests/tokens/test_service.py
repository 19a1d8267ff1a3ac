"""Device tokens against the store (SQLite and PostgreSQL): keys, certificates, legacy
secrets, the replay cache and the device's state."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from sqlalchemy import func, select, update

from iotsec.app.identity import device_tokens as svc
from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki import issuance, revocation
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    InvalidInputError,
    KeyCustodyError,
    NotFoundError,
    TokenAlgorithmError,
    TokenAudienceError,
    TokenClaimsError,
    TokenDeviceError,
    TokenExpiredError,
    TokenKeyExpiredError,
    TokenKeyRevokedError,
    TokenMalformedError,
    TokenNotYetValidError,
    TokenReplayError,
    TokenSignatureError,
    TokenUnknownKeyError,
)
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.timeutil import ts
from tests.conftest import FakeClock
from tests.helpers import make_csr
from tests.tokens.support import (
    DeviceKey,
    claims_for,
    ed,
    hs256_by_hand,
    p256,
    public_der,
    public_pem,
    replace_payload,
    sign,
    unsigned,
)


def now_of(rt: Runtime) -> int:
    return ts(rt.now())


def add(rt: Runtime, *ids: str) -> None:
    for device_id in ids:
        devices.add_device(rt, devices.NewDevice.parse(device_id))


def token(rt: Runtime, key: DeviceKey | bytes, kid: str, device_id: str = "d1",
          **over: Any) -> str:
    return sign(key, kid, claims_for(device_id, now_of(rt), **over))


@pytest.fixture
def d1(rt: Runtime) -> tuple[DeviceKey, str]:
    """Device d1 (and d2) registered; d1 has a registered ES256 key."""
    add(rt, "d1", "d2")
    key = p256()
    return key, svc.register_key(rt, "d1", public_pem(key))


def test_registered_es256_key(rt: Runtime, d1: tuple[DeviceKey, str]) -> None:
    key, kid = d1
    result = svc.verify(rt, token(rt, key, kid))
    assert (result.device_id, result.kid, result.algorithm) == ("d1", kid, "ES256")
    [record] = svc.list_keys(rt, "d1")
    assert (record.kid, record.source, record.algorithm) == (kid, "registered", "ES256")
    assert record.status(rt.now()) == "active"


def test_registered_eddsa_key_in_der(rt: Runtime) -> None:
    add(rt, "d1")
    key = ed()
    kid = svc.register_key(rt, "d1", public_der(key))
    assert svc.verify(rt, token(rt, key, kid)).algorithm == "EdDSA"


def test_register_key_refusals(rt: Runtime, d1: tuple[DeviceKey, str]) -> None:
    key, _ = d1
    with pytest.raises(ConflictError):
        svc.register_key(rt, "d1", public_pem(key))
    with pytest.raises(ConflictError):
        svc.register_key(rt, "d2", public_pem(key))
    with pytest.raises(NotFoundError):
        svc.register_key(rt, "ghost", public_pem(p256()))
    with pytest.raises(InvalidInputError):
        svc.register_key(rt, "d1", b"not a key")
    change_state(rt, "d2", DeviceState.RETIRED)
    with pytest.raises(DeviceStateError):
        svc.register_key(rt, "d2", public_pem(p256()))


def _cert(rt: Runtime, key: DeviceKey, days: int | None = None) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        csr = make_csr(key)
    else:
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
               .sign(key, None).public_bytes(serialization.Encoding.PEM))
    return issuance.issue_from_csr(rt, "d1", csr, days=days).serial


@pytest.mark.parametrize("make", [p256, ed])
def test_certificate_key_verifies_with_the_serial_as_kid(rt: Runtime, make: Any) -> None:
    add(rt, "d1")
    key = make()
    serial = _cert(rt, key)
    result = svc.verify(rt, token(rt, key, serial))
    assert result.kid == serial
    [record] = svc.list_keys(rt, "d1")
    assert (record.kid, record.source) == (serial, "certificate")


def test_certificate_key_of_another_type_is_not_a_token_key(rt: Runtime) -> None:
    add(rt, "d1")
    key384 = ec.generate_private_key(ec.SECP384R1())
    serial = issuance.issue_from_csr(rt, "d1", make_csr(key384)).serial
    assert svc.list_keys(rt, "d1") == []
    forged = sign(key384, serial, claims_for("d1", now_of(rt)), alg="ES384")
    with pytest.raises(TokenUnknownKeyError):
        svc.verify(rt, forged)


def test_revoked_and_expired_certificate_keys(rt: Runtime, clock: FakeClock) -> None:
    add(rt, "d1")
    key = p256()
    serial = _cert(rt, key)
    revocation.revoke(rt, serial)
    with pytest.raises(TokenKeyRevokedError):
        svc.verify(rt, token(rt, key, serial))
    short = _cert(rt, key, days=1)
    svc.verify(rt, token(rt, key, short))
    clock.advance(timedelta(days=2))
    with pytest.raises(TokenKeyExpiredError):
        svc.verify(rt, token(rt, key, short))


def test_superseded_certificate_works_during_its_grace(rt: Runtime, clock: FakeClock) -> None:
    add(rt, "d1")
    key = p256()
    old = _cert(rt, key)
    issuance.renew(rt, old, make_csr(p256()), grace=timedelta(hours=1))
    svc.verify(rt, token(rt, key, old))
    clock.advance(timedelta(hours=2))
    with pytest.raises(TokenKeyRevokedError):
        svc.verify(rt, token(rt, key, old))


def test_revoked_registered_key(rt: Runtime, d1: tuple[DeviceKey, str]) -> None:
    key, kid = d1
    record = svc.revoke_key(rt, kid)
    assert record.status(rt.now()) == "revoked"
    with pytest.raises(TokenKeyRevokedError):
        svc.verify(rt, token(rt, key, kid))
    with pytest.raises(ConflictError):
        svc.revoke_key(rt, kid)
    with pytest.raises(NotFoundError):
        svc.revoke_key(rt, "nope")


def test_certificate_kid_cannot_be_revoked_here(rt: Runtime) -> None:
    add(rt, "d1")
    serial = _cert(rt, p256())
    with pytest.raises(InvalidInputError, match="is a certificate") as info:
        svc.revoke_key(rt, serial)
    assert "cert revoke" in info.value.hint


@pytest.mark.parametrize("state", [DeviceState.DISABLED, DeviceState.RETIRED])
def test_disabled_or_retired_device_is_refused(rt: Runtime, d1: tuple[DeviceKey, str],
                                               state: DeviceState) -> None:
    key, kid = d1
    change_state(rt, "d1", state)
    with pytest.raises(TokenDeviceError, match=state.value):
        svc.verify(rt, token(rt, key, kid))
    if state is DeviceState.DISABLED:
        change_state(rt, "d1", DeviceState.ACTIVE)
        svc.verify(rt, token(rt, key, kid))


def test_failure_reasons_through_the_store(rt: Runtime, d1: tuple[DeviceKey, str]) -> None:
    key, kid = d1
    other = p256()
    other_kid = svc.register_key(rt, "d2", public_pem(other))
    now = now_of(rt)
    good = claims_for("d1", now)
    cases: list[tuple[str, type[Exception]]] = [
        ("garbage", TokenMalformedError),
        ("a.b", TokenMalformedError),
        ("@@@.###.!!!", TokenMalformedError),
        ("A" * 20_000, TokenMalformedError),
        (unsigned({"alg": "none", "kid": kid}, good), TokenAlgorithmError),
        (hs256_by_hand(public_pem(key), {"alg": "HS256", "kid": kid}, good),
         TokenAlgorithmError),
        (hs256_by_hand(public_der(key), {"alg": "HS256", "kid": kid}, good),
         TokenAlgorithmError),
        (sign(ed(), kid, good), TokenAlgorithmError),
        (sign(key, "unknown-kid", good), TokenUnknownKeyError),
        (sign(key, kid, claims_for("ghost", now)), TokenUnknownKeyError),
        (replace_payload(sign(key, kid, good), {**good, "exp": now + 3000}),
         TokenSignatureError),
        (sign(other, kid, good), TokenSignatureError),
        (sign(other, other_kid, good), TokenUnknownKeyError),
        (token(rt, key, kid, iat=now - 7200, exp=now - 3600), TokenExpiredError),
        (token(rt, key, kid, iat=now + 600, exp=now + 900), TokenNotYetValidError),
        (token(rt, key, kid, aud="another-deployment"), TokenAudienceError),
        (token(rt, key, kid, lifetime=3601), TokenClaimsError),
        (token(rt, key, kid, iss="d2"), TokenClaimsError),
        (token(rt, key, kid, jti=None), TokenClaimsError),
    ]
    for bad, error in cases:
        with pytest.raises(error):
            svc.verify(rt, bad)
    # Nothing refused was remembered as used.
    svc.verify(rt, sign(key, kid, good))


def test_leeway_accepts_small_clock_skew(rt: Runtime, d1: tuple[DeviceKey, str]) -> None:
    key, kid = d1
    now = now_of(rt)
    svc.verify(rt, token(rt, key, kid, iat=now + 20, exp=now + 300))
    svc.verify(rt, token(rt, key, kid, iat=now - 300, exp=now - 20))


def test_audience_and_lifetime_come_from_settings(settings: Settings, initialised: Any,
                                                  clock: FakeClock) -> None:
    custom = settings.model_copy(update={"deployment": "plant-7",
                                         "device_token_max_lifetime": 120})
    rt = open_runtime(custom, clock=clock)
    try:
        add(rt, "d1")
        key = p256()
        kid = svc.register_key(rt, "d1", public_pem(key))
        svc.verify(rt, token(rt, key, kid, audience="plant-7", lifetime=120))
        with pytest.raises(TokenAudienceError):
            svc.verify(rt, token(rt, key, kid))
        with pytest.raises(TokenClaimsError):
            svc.verify(rt, token(rt, key, kid, audience="plant-7", lifetime=121))
    finally:
        rt.close()


def test_replay_is_refused_and_the_cache_is_purged(rt: Runtime, d1: tuple[DeviceKey, str],
                                                   clock: FakeClock) -> None:
    key, kid = d1
    first = token(rt, key, kid, jti="j-1", lifetime=60)
    svc.verify(rt, first)
    with pytest.raises(TokenReplayError):
        svc.verify(rt, first)
    svc.verify(rt, token(rt, key, kid, jti="j-2", lifetime=60))
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(m.token_jtis)).scalar() == 2
    clock.advance(timedelta(minutes=10))
    svc.verify(rt, token(rt, key, kid, jti="j-3"))
    with rt.engine.connect() as conn:
        left = conn.execute(select(m.token_jtis.c.jti)).scalars().all()
    assert left == ["j-3"]


# --- legacy HS256 secrets --------------------------------------------------------------


def test_secret_is_shown_once_and_stored_only_sealed(rt: Runtime) -> None:
    add(rt, "d1")
    kid, secret = svc.create_secret(rt, "d1")
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    with rt.engine.connect() as conn:
        row = conn.execute(select(m.device_secrets)).one()
    assert row.kid == kid
    assert row.expires_at is None
    stored = bytes(row.ciphertext)
    assert stored != secret.encode()
    assert secret.encode() not in stored
    assert base64.urlsafe_b64decode(secret + "=") not in stored
    result = svc.verify(rt, token(rt, secret.encode(), kid))
    assert (result.algorithm, result.kid) == ("HS256", kid)
    [record] = svc.list_keys(rt, "d1")
    assert (record.kid, record.source, record.algorithm) == (kid, "secret", "HS256")
    with pytest.raises(ConflictError, match="rotate"):
        svc.create_secret(rt, "d1")


def test_secret_token_with_a_wrong_secret_fails(rt: Runtime) -> None:
    add(rt, "d1")
    kid, _ = svc.create_secret(rt, "d1")
    with pytest.raises(TokenSignatureError):
        svc.verify(rt, token(rt, b"x" * 43, kid))


def test_rotation_keeps_the_old_secret_for_the_grace_period(rt: Runtime,
                                                            clock: FakeClock) -> None:
    add(rt, "d1")
    old_kid, old = svc.create_secret(rt, "d1")
    new_kid, new = svc.rotate_secret(rt, "d1", timedelta(hours=1))
    assert new_kid != old_kid
    assert new != old
    svc.verify(rt, token(rt, old.encode(), old_kid))
    svc.verify(rt, token(rt, new.encode(), new_kid))
    statuses = {k.kid: k.status(rt.now()) for k in svc.list_keys(rt, "d1")}
    assert statuses == {old_kid: "rotating", new_kid: "active"}
    clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(TokenKeyExpiredError):
        svc.verify(rt, token(rt, old.encode(), old_kid))
    svc.verify(rt, token(rt, new.encode(), new_kid))
    # The next rotation drops secrets whose grace period is over.
    newest_kid, _ = svc.rotate_secret(rt, "d1", timedelta(0))
    assert {k.kid for k in svc.list_keys(rt, "d1")} == {new_kid, newest_kid}
    with pytest.raises(TokenKeyExpiredError):
        svc.verify(rt, token(rt, new.encode(), new_kid))


def test_rotate_refusals(rt: Runtime) -> None:
    add(rt, "d1")
    with pytest.raises(NotFoundError, match="create"):
        svc.rotate_secret(rt, "d1", timedelta(hours=1))
    svc.create_secret(rt, "d1")
    with pytest.raises(InvalidInputError):
        svc.rotate_secret(rt, "d1", timedelta(days=91))
    with pytest.raises(InvalidInputError):
        svc.rotate_secret(rt, "d1", timedelta(seconds=-1))


def test_revoking_a_secret_ends_it_now(rt: Runtime) -> None:
    add(rt, "d1")
    kid, secret = svc.create_secret(rt, "d1")
    assert svc.revoke_key(rt, kid).source == "secret"
    with pytest.raises(TokenKeyExpiredError):
        svc.verify(rt, token(rt, secret.encode(), kid))
    # With no current secret left, a new one can be created.
    svc.create_secret(rt, "d1")


def test_ciphertext_moved_to_another_row_does_not_decrypt(rt: Runtime) -> None:
    add(rt, "d1", "d2")
    kid1, secret1 = svc.create_secret(rt, "d1")
    kid2, _ = svc.create_secret(rt, "d2")
    with rt.engine.begin() as conn:
        stolen = conn.execute(select(m.device_secrets.c.ciphertext)
                              .where(m.device_secrets.c.kid == kid1)).scalar_one()
        conn.execute(update(m.device_secrets).where(m.device_secrets.c.kid == kid2)
                     .values(ciphertext=stolen))
    with pytest.raises(KeyCustodyError) as info:
        svc.verify(rt, token(rt, secret1.encode(), kid2, device_id="d2"))
    assert secret1 not in f"{info.value} {info.value.hint}"


@pytest.mark.parametrize("first", [b"\x01", b"\x02", b"{"])
def test_a_stored_secret_in_another_format_is_refused(rt: Runtime, first: bytes) -> None:
    add(rt, "d1")
    kid, secret = svc.create_secret(rt, "d1")
    with rt.engine.begin() as conn:
        sealed = conn.execute(select(m.device_secrets.c.ciphertext)).scalar_one()
        conn.execute(update(m.device_secrets).values(ciphertext=first + bytes(sealed)[1:]))
    with pytest.raises(KeyCustodyError, match="not in the format") as info:
        svc.verify(rt, token(rt, secret.encode(), kid))
    assert secret not in f"{info.value} {info.value.hint}"


def test_wrong_passphrase_for_the_kek_fails_cleanly(rt: Runtime, settings: Settings,
                                                    clock: FakeClock) -> None:
    add(rt, "d1")
    add(rt, "d2")
    kid, secret = svc.create_secret(rt, "d1")
    wrong = "a wrong passphrase of some length"
    other = open_runtime(settings.model_copy(update={"ca_passphrase": SecretStr(wrong)}),
                         clock=clock)
    try:
        with pytest.raises(KeyCustodyError) as info:
            svc.verify(other, token(other, secret.encode(), kid))
        text = f"{info.value} {info.value.hint}"
        assert wrong not in text
        assert secret not in text
        with pytest.raises(KeyCustodyError):  # d2 has no secret yet: the KEK is needed
            svc.create_secret(other, "d2")
    finally:
        other.close()
    # The right passphrase still works, and nothing was used up by the failures.
    svc.verify(rt, token(rt, secret.encode(), kid))


def test_secret_lifecycle_needs_a_registered_device(rt: Runtime) -> None:
    with pytest.raises(NotFoundError):
        svc.create_secret(rt, "ghost")
    with pytest.raises(NotFoundError):
        svc.list_keys(rt, "ghost")


def test_kid_of_one_device_does_not_unlock_another(rt: Runtime) -> None:
    add(rt, "d1", "d2")
    kid1, secret1 = svc.create_secret(rt, "d1")
    forged = token(rt, secret1.encode(), kid1, device_id="d2")
    with pytest.raises(TokenUnknownKeyError):
        svc.verify(rt, forged)


def test_public_key_in_any_encoding_is_no_hmac_secret(rt: Runtime) -> None:
    """An ES256 device key cannot be used as an HMAC secret under any encoding."""
    add(rt, "d1")
    key = p256()
    kid = svc.register_key(rt, "d1", public_pem(key))
    good = claims_for("d1", now_of(rt))
    spki = public_der(key)
    for secret in (spki, public_pem(key), base64.b64encode(spki),
                   key.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.UncompressedPoint)):
        with pytest.raises(TokenAlgorithmError):
            svc.verify(rt, hs256_by_hand(secret, {"alg": "HS256", "kid": kid}, good))
