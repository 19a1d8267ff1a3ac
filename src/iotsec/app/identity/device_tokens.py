"""Device token use cases: device public keys, legacy HS256 secrets, and verification.

A device that cannot do mutual TLS signs short-lived JWTs with its own key. Its
verification keys are the public keys registered for it (``device_keys``) and the keys of
its valid certificates (kid = the certificate serial). Legacy devices may instead get an
HS256 secret generated here: shown once, stored only sealed as a record envelope under the
home's active key-encryption key (:func:`iotsec.app.custody.keys.seal_device_secret`), and rotated
with a grace period.

Verification loads only the key the token names, runs the pure core
(:func:`iotsec.identity.device_tokens.verify_device_token`) and records the token's ``jti`` in the
``token_jtis`` replay cache, all in one transaction.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from cryptography import x509
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from iotsec.app.custody.keys import (
    DEVICE_SECRETS,
    device_secret_record_id,
    open_device_secret,
)
from iotsec.app.events import Event
from iotsec.app.runtime import Runtime, Slot
from iotsec.app.throttle import failure_throttle
from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    InvalidInputError,
    NotFoundError,
    TokenDeviceError,
    TokenError,
    TokenMalformedError,
)
from iotsec.identity.device_tokens import (
    HS256,
    MAX_KID,
    VerificationKey,
    VerifiedToken,
    load_public_key,
    public_verification_key,
    secret_verification_key,
    token_algorithm,
    verify_device_token,
)
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.protect.kek import KeyWrapper
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "MAX_GRACE", "PURGE_INTERVAL", "SECRET_BYTES", "DeviceKeyRecord", "authenticate",
    "create_secret", "fail", "list_keys", "register_key", "revoke_key", "rotate_secret", "verify"
]

MAX_GRACE = timedelta(days=90)
#: Legacy secrets carry 256 bits of entropy, shown to the operator as base64url text; the
#: HMAC key is that text's ASCII bytes, which is what device-side JWT libraries use.
SECRET_BYTES = 32
#: How often (seconds) a verification also deletes expired replay-cache rows.
PURGE_INTERVAL = 60

#: When this process last purged expired token ids (a timestamp).
_PURGED_AT: Slot[int] = Slot("device_tokens.purged_at")


@dataclass(frozen=True, slots=True)
class DeviceKeyRecord:
    """One way a device may sign its tokens: a registered key, a certificate, a secret."""

    kid: str
    device_id: str
    algorithm: str
    source: str  # registered | certificate | secret
    created_at: datetime
    revoked_at: datetime | None = None
    #: End of validity: a certificate's notAfter, or the end of a rotated secret's grace.
    expires_at: datetime | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.expires_at is not None and self.source == "secret":
            return "rotating"  # rotated out, still accepted until its grace period ends
        return "active"


def _device_state(conn: Connection, device_id: str, *, lock: bool = False) -> DeviceState:
    query = select(m.devices.c.state).where(m.devices.c.id == device_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"device {device_id!r} is not registered",
                            hint="register it with 'iotsec device add'")
    return DeviceState(row.state)


def _require_credentials_allowed(conn: Connection, device_id: str) -> None:
    state = _device_state(conn, device_id, lock=True)
    if not state.may_hold_certificates:
        raise DeviceStateError(f"device {device_id!r} is {state.value}; it cannot get new "
                               "credentials", hint="only pending or active devices can")


# --- public keys ---------------------------------------------------------------------------


def register_key(rt: Runtime, device_id: str, public_key: bytes) -> str:
    """Register a device's public key (PEM or DER SubjectPublicKeyInfo; EC P-256 or Ed25519)
    and return its kid, the RFC 7638 thumbprint the device puts in its tokens' header."""
    device_id = parse_device_id(device_id)
    parsed = load_public_key(public_key)
    now = ts(rt.now())
    with transaction(rt.engine) as conn:
        _require_credentials_allowed(conn, device_id)
        taken = conn.execute(select(m.device_keys.c.device_id)
                             .where(m.device_keys.c.kid == parsed.kid)).first()
        if taken is not None:
            raise ConflictError(f"this public key is already registered (kid {parsed.kid})",
                                hint="a key is registered once, for one device; generate a "
                                "new key pair for another device")
        conn.execute(insert(m.device_keys).values(
            kid=parsed.kid, device_id=device_id, algorithm=parsed.algorithm,
            public_key_der=parsed.spki_der, source="registered", created_at=now,
            revoked_at=None))
    return parsed.kid


def list_keys(rt: Runtime, device_id: str) -> list[DeviceKeyRecord]:
    """Everything a device may sign tokens with: registered keys (revoked ones too), its
    unexpired, unrevoked certificates with a P-256 or Ed25519 key, and its legacy secrets."""
    device_id = parse_device_id(device_id)
    now = ts(rt.now())
    k, s, c = m.device_keys.c, m.device_secrets.c, m.certificates.c
    with reading(rt.engine) as conn:
        _device_state(conn, device_id)
        registered = conn.execute(select(k.kid, k.algorithm, k.source, k.created_at,
                                         k.revoked_at).where(k.device_id == device_id)).all()
        legacy = conn.execute(select(s.kid, s.created_at, s.expires_at)
                              .where(s.device_id == device_id)).all()
        certs = conn.execute(select(c.serial, c.der, c.created_at, c.not_after, c.revoked_at)
                             .where(c.device_id == device_id, c.kind == "device",
                                    c.not_after > now)).all()
    found = [DeviceKeyRecord(kid=r.kid, device_id=device_id, algorithm=r.algorithm,
                             source=r.source, created_at=from_ts(r.created_at),
                             revoked_at=_maybe(r.revoked_at)) for r in registered]
    for r in certs:
        if r.revoked_at is not None and r.revoked_at <= now:
            continue
        algorithm = token_algorithm(x509.load_der_x509_certificate(r.der).public_key())
        if algorithm is not None:
            found.append(DeviceKeyRecord(kid=r.serial, device_id=device_id,
                                         algorithm=algorithm, source="certificate",
                                         created_at=from_ts(r.created_at),
                                         revoked_at=_maybe(r.revoked_at),
                                         expires_at=from_ts(r.not_after)))
    found.extend(DeviceKeyRecord(kid=r.kid, device_id=device_id, algorithm=HS256,
                                 source="secret", created_at=from_ts(r.created_at),
                                 expires_at=_maybe(r.expires_at)) for r in legacy)
    found.sort(key=lambda rec: (rec.created_at, rec.kid))
    return found


def _maybe(seconds: int | None) -> datetime | None:
    return None if seconds is None else from_ts(seconds)


def revoke_key(rt: Runtime, kid: str) -> DeviceKeyRecord:
    """Revoke a registered key, or end a legacy secret now (e.g. after a leak). A
    certificate's key is revoked by revoking the certificate."""
    if not isinstance(kid, str) or not 1 <= len(kid) <= MAX_KID:
        raise InvalidInputError(f"a key id has 1 to {MAX_KID} characters")
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    k, s = m.device_keys.c, m.device_secrets.c
    with transaction(rt.engine) as conn:
        key = conn.execute(select(m.device_keys).where(k.kid == kid).with_for_update()).first()
        if key is not None:
            if key.revoked_at is not None and key.revoked_at <= now:
                raise ConflictError(f"key {kid} is already revoked",
                                    hint="a revocation is final; nothing to do")
            conn.execute(update(m.device_keys).where(k.kid == kid).values(revoked_at=now))
            return DeviceKeyRecord(kid=kid, device_id=key.device_id, algorithm=key.algorithm,
                                   source=key.source, created_at=from_ts(key.created_at),
                                   revoked_at=moment)
        secret = conn.execute(select(m.device_secrets).where(s.kid == kid)
                              .with_for_update()).first()
        if secret is not None:
            if secret.expires_at is not None and secret.expires_at <= now:
                raise ConflictError(f"secret {kid} has already stopped working",
                                    hint="nothing to do")
            conn.execute(update(m.device_secrets).where(s.kid == kid).values(expires_at=now))
            return DeviceKeyRecord(kid=kid, device_id=secret.device_id, algorithm=HS256,
                                   source="secret", created_at=from_ts(secret.created_at),
                                   expires_at=moment)
        cert = conn.execute(select(m.certificates.c.serial)
                            .where(m.certificates.c.serial == kid)).first()
    if cert is not None:
        raise InvalidInputError(f"{kid} is a certificate; its key stops signing tokens when "
                                "the certificate is revoked",
                                hint=f"run 'iotsec cert revoke {kid}'")
    raise NotFoundError(f"no device key or secret with kid {kid!r}",
                        hint="list a device's keys with 'iotsec device-token key list ID'")


# --- legacy HS256 secrets ------------------------------------------------------------------


def _new_secret(conn: Connection, kek: KeyWrapper, device_id: str, now: int
                ) -> tuple[str, str]:
    kid = f"hs256-{secrets.token_hex(8)}"
    secret = secrets.token_urlsafe(SECRET_BYTES)
    conn.execute(insert(m.device_secrets).values(
        kid=kid, device_id=device_id,
        ciphertext=DEVICE_SECRETS.seal(secret.encode("ascii"), kek,
                                       device_secret_record_id(kid, device_id)),
        created_at=now, expires_at=None))
    return kid, secret


def _active_secrets(conn: Connection, device_id: str) -> list[str]:
    s = m.device_secrets.c
    return list(conn.execute(select(s.kid).where(s.device_id == device_id,
                                                 s.expires_at.is_(None))).scalars())


def create_secret(rt: Runtime, device_id: str) -> tuple[str, str]:
    """Generate a legacy HS256 secret for a device; return ``(kid, secret)``.

    The secret is returned here and never again: only its sealed form is stored. A device
    has one current secret; to replace it, use :func:`rotate_secret`.
    """
    device_id = parse_device_id(device_id)
    now = ts(rt.now())
    with transaction(rt.engine) as conn:
        _require_credentials_allowed(conn, device_id)
        if _active_secrets(conn, device_id):
            raise ConflictError(f"device {device_id!r} already has a secret; rotate it to "
                                "replace it",
                                hint="replace it with 'iotsec device-token secret rotate'")
        # The home's first KEK is made only once the request is known to be good: a
        # refused request leaves the home as it was.
        return _new_secret(conn, rt.custody.keks().active_or_create(), device_id, now)


def rotate_secret(rt: Runtime, device_id: str, grace: timedelta) -> tuple[str, str]:
    """Replace a device's secret; the old one keeps working for ``grace``, then stops.
    Returns the new ``(kid, secret)``, shown once."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidInputError(f"the grace period must be between 0 and {MAX_GRACE.days} days")
    device_id = parse_device_id(device_id)
    now = ts(rt.now())
    s = m.device_secrets.c
    with transaction(rt.engine) as conn:
        _require_credentials_allowed(conn, device_id)
        current = _active_secrets(conn, device_id)
        if not current:
            raise NotFoundError(f"device {device_id!r} has no secret to rotate; create one "
                                "first",
                                hint="create one with 'iotsec device-token secret create'")
        kek = rt.custody.keks().active_or_create()
        # Secrets whose grace period is over are of no use to anyone: drop them.
        conn.execute(delete(m.device_secrets).where(s.device_id == device_id,
                                                    s.expires_at.is_not(None),
                                                    s.expires_at <= now))
        conn.execute(update(m.device_secrets).where(s.kid.in_(current))
                     .values(expires_at=now + int(grace.total_seconds())))
        return _new_secret(conn, kek, device_id, now)


# --- verification --------------------------------------------------------------------------


def _key_by_kid(rt: Runtime, conn: Connection, device_id: str, kid: str
                ) -> list[VerificationKey]:
    """The device's key with this kid, if any: registered key, certificate, or secret."""
    state = conn.execute(select(m.devices.c.state).where(m.devices.c.id == device_id)).first()
    if state is None:
        return []  # reported as an unknown key: an unregistered id has no keys
    if not DeviceState(state.state).may_hold_certificates:
        raise TokenDeviceError(f"device {device_id!r} is {state.state}; it may not "
                               "authenticate")
    k, s, c = m.device_keys.c, m.device_secrets.c, m.certificates.c
    row = conn.execute(select(k.public_key_der, k.revoked_at)
                       .where(k.kid == kid, k.device_id == device_id)).first()
    if row is not None:
        key = public_verification_key(kid, row.public_key_der, revoked_at=row.revoked_at)
        return [key] if key is not None else []
    sealed = conn.execute(select(s.ciphertext, s.expires_at)
                          .where(s.kid == kid, s.device_id == device_id)).first()
    if sealed is not None:
        secret = open_device_secret(rt, kid, device_id, bytes(sealed.ciphertext))
        return [secret_verification_key(kid, secret, not_after=sealed.expires_at)]
    cert = conn.execute(select(c.der, c.not_after, c.revoked_at)
                        .where(c.serial == kid, c.device_id == device_id,
                               c.kind == "device")).first()
    if cert is not None:
        public = x509.load_der_x509_certificate(cert.der).public_key()
        key = public_verification_key(kid, public, revoked_at=cert.revoked_at,
                                      not_after=cert.not_after)
        return [key] if key is not None else []
    return []


def _purge_replay_cache(rt: Runtime, conn: Connection, now: int) -> None:
    last = rt.get(_PURGED_AT)
    if last is not None and 0 <= now - last < PURGE_INTERVAL:
        return
    conn.execute(delete(m.token_jtis).where(m.token_jtis.c.expires_at < now))
    rt.put(_PURGED_AT, now)


def verify(rt: Runtime, token: str, *, source: str | None = None, action: str = ""
           ) -> VerifiedToken:
    """Verify a device JWT against the store, or raise a :class:`~iotsec.errors.TokenError`
    naming the reason. A token is accepted once: its ``jti`` is remembered until it expires.

    Either outcome is recorded as an event with ``source`` (the client's address) and
    ``action`` (what the token was for); a failure's actor is the device the token claims
    to come from, or ``unknown`` when the token is refused before that is read.
    """
    now = ts(rt.now())
    settings = rt.settings
    # The device and kid the token claims, as the verifier read them (unverified): the
    # verifier looks keys up by them only once the token's shape and header are sound.
    claimed: dict[str, str] = {}
    with transaction(rt.engine) as conn:
        _purge_replay_cache(rt, conn, now)

        def lookup(device_id: str, kid: str) -> list[VerificationKey]:
            claimed.update(device=device_id, kid=kid)
            return _key_by_kid(rt, conn, device_id, kid)

        def seen(device_id: str, jti: str, remember_until: int) -> bool:
            # The primary key (device_id, jti) is the replay guard: a second insert fails
            # even when two servers see the same token at the same moment.
            try:
                with conn.begin_nested():
                    conn.execute(insert(m.token_jtis).values(
                        device_id=device_id, jti=jti, expires_at=remember_until))
            except IntegrityError:
                return True
            return False

        try:
            verified = verify_device_token(
                token, device_keys=lookup, audience=settings.deployment, now=now,
                max_lifetime=settings.device_token_max_lifetime, seen=seen)
        except TokenError as exc:
            failure: TokenError | None = exc
        else:
            failure = None
    # Recorded after the transaction so the event write never waits on its lock; the
    # reason is recorded, the token itself never is.
    if failure is not None:
        fail(rt, failure, source=source, action=action, device=claimed.get("device"),
             kid=claimed.get("kid"))
    rt.events.record(Event(rt.now(), "device-token", "success", actor=verified.device_id,
                           source=source, subject=action or None,
                           detail={"kid": verified.kid, "alg": verified.algorithm}))
    return verified


def fail(rt: Runtime, failure: TokenError, *, source: str | None, action: str,
         device: str | None = None, kid: str | None = None) -> NoReturn:
    """Record a refused device token (who it claims to be, from where, and why) and raise
    ``failure``. The token itself is never recorded."""
    detail = {"reason": failure.code} | ({"kid": kid} if kid else {})
    rt.events.record(Event(rt.now(), "device-token", "failure", actor=device or "unknown",
                           source=source, subject=action or None, detail=detail))
    raise failure


def authenticate(rt: Runtime, token: str, *, source: str | None, action: str
                 ) -> VerifiedToken:
    """The device behind a request's bearer token (``""`` when there is none), under the
    failed-authentication throttle of operator tokens (:func:`iotsec.app.tokens.
    failure_throttle`): every refused token counts against ``source``, and a throttled
    source is refused (429) before its token is looked at."""
    where = source or "unknown"
    throttle = failure_throttle(rt)
    throttle.check(where)
    try:
        if not token:
            fail(rt, TokenMalformedError("no device token: send 'Authorization: Bearer "
                                         "<device JWT>'"), source=source, action=action)
        verified = verify(rt, token, source=source, action=action)
    except TokenError:
        throttle.failed(where)
        raise
    throttle.succeeded(where)
    return verified
