"""Enrolment and renewal on the device, over EST only: no operator credential anywhere.

::

    from iotsec.device import RenewalAgent, enrol

    enrol("https://iotsec.example:8444", dir="/var/lib/sensor", ca_file="ca.pem",
          secret=("es_...", secret))                      # or claim=("claim.crt", "claim.key")
    agent = RenewalAgent("/var/lib/sensor", "https://iotsec.example:8444", "ca.pem")
    agent.run(stop_event)                                   # or agent.run_once() from a loop

- :func:`enrol` makes the key on the device (it never leaves it), sends a CSR with a
  bootstrap secret (HTTP Basic) or a claim certificate (mutual TLS), and while the server
  answers 202 (the device awaits an operator's approval) asks again after each
  ``Retry-After``, with the same key, for at most ``wait`` seconds. The pair is written
  into the directory of :mod:`iotsec.sdk.credentials` (``key.pem`` 0600, ``cert.pem``).
- :class:`RenewalAgent` renews over the device's own mutual TLS (``simplereenroll``) at
  about two thirds of the certificate's lifetime: the moment is drawn once per certificate,
  uniformly within ten per cent of the lifetime around that point, so that a fleet issued
  together does not renew together. Each renewal makes a new key. The new pair replaces
  the old one on disk in crash-safe steps and the old pair is kept (``*.prev.pem``) until
  the new one is proven: it chains to the trusted CA, holds the new key, and the EST server
  accepts it in a TLS handshake. Failures back off exponentially with jitter (a throttled
  or busy server's ``Retry-After`` is honoured).
- Logs (``iotsec.device``) name the device, serials and dates, never a secret or a key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509

from iotsec.errors import (
    ConflictError,
    EnrolmentPending,
    EstError,
    InvalidInputError,
    IotsecError,
    NotFoundError,
    ThrottledError,
)
from iotsec.filesystem import os_error
from iotsec.pki.keys import KeyType
from iotsec.sdk.credentials import (
    DeviceFiles,
    Pair,
    check_issued,
    directory_lock,
    drop_previous,
    install_enrolled,
    load_ca,
    load_key,
    make_csr,
    promote,
    recover,
    write_staged_cert,
    write_staged_key,
)
from iotsec.sdk.est import ClientCert, EstClient

__all__ = ["RENEW_FRACTION", "RENEW_JITTER", "AgentState", "AgentStatus", "Clock",
           "DeviceCertificate", "RenewalAgent", "enrol"]

log = logging.getLogger("iotsec.device")

#: Where in a certificate's lifetime it is renewed, and how far (as a share of the
#: lifetime) each certificate's moment is moved at random either way.
RENEW_FRACTION = 2 / 3
RENEW_JITTER = 0.1

Clock = Callable[[], datetime]
AgentState = Literal["waiting", "renewed", "proven", "retrying"]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """The certificate a device holds now, and where its files are."""

    device_id: str
    serial: str
    not_before: datetime
    not_after: datetime
    cert_file: Path
    key_file: Path

    @classmethod
    def of(cls, pair: Pair, files: DeviceFiles) -> DeviceCertificate:
        return cls(pair.device_id, pair.serial, pair.cert.not_valid_before_utc,
                   pair.cert.not_valid_after_utc, files.cert, files.key)

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device_id, "serial": self.serial,
                "not_before": _iso(self.not_before), "not_after": _iso(self.not_after),
                "cert_file": str(self.cert_file), "key_file": str(self.key_file)}


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What one :meth:`RenewalAgent.run_once` did: ``waiting`` (not due yet), ``renewed``
    (and proven), ``proven`` (an earlier renewal's pair is now proven), ``retrying`` (it
    failed: ``error`` says why; the next attempt is at ``next_check``)."""

    state: AgentState
    certificate: DeviceCertificate
    renew_at: datetime
    next_check: datetime
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"state": self.state, **self.certificate.to_json(),
                "renew_at": _iso(self.renew_at), "next_check": _iso(self.next_check)}
        if self.error is not None:
            data["error"] = self.error
        return data


def _client_or_url(server: str | EstClient, ca_file: Path, label: str | None,
                   timeout: float) -> EstClient:
    if isinstance(server, EstClient):
        return server
    return EstClient(server, ca_file=ca_file, label=label, timeout=timeout)


def _key_type(key_type: KeyType | str) -> KeyType:
    return key_type if isinstance(key_type, KeyType) else KeyType.parse(key_type)


def enrol(server: str | EstClient, *, dir: str | Path, ca_file: str | Path,
          secret: tuple[str, str] | None = None, claim: ClientCert | None = None,
          key_type: KeyType | str = KeyType.ECDSA_P256, label: str | None = None,
          common_name: str | None = None, serial_number: str | None = None,
          wait: float = 600.0, timeout: float = 30.0, stop: threading.Event | None = None,
          clock: Clock = _now) -> DeviceCertificate:
    """Enrol the device whose credentials live in ``dir`` (see the module docstring).

    Give exactly one of ``secret=(id, secret)`` and ``claim=(cert_file, key_file)``.
    ``common_name`` / ``serial_number`` go into the CSR for a template that takes the device
    id from it. While the device awaits approval, the server is asked again after each
    ``Retry-After`` for at most ``wait`` seconds (0: once), then
    :class:`~iotsec.errors.EnrolmentPending` is raised; a later call goes on with the same
    key. ``stop`` ends the waiting early (also with ``EnrolmentPending``). A directory that
    already holds a usable pair is refused (the agent renews it)."""
    if (secret is None) == (claim is None):
        raise InvalidInputError("enrol with either a bootstrap secret or a claim certificate")
    if not 0 <= wait <= 7 * 86_400:
        raise InvalidInputError("wait at most a week for an approval")
    files = DeviceFiles(Path(dir))
    ca_path = Path(ca_file)
    ca = load_ca(ca_path)
    kind = _key_type(key_type)
    client = _client_or_url(server, ca_path, label, timeout)
    with directory_lock(files):
        try:
            existing: Pair | None = recover(files)
        except NotFoundError:
            existing = None
        if existing is not None:
            raise ConflictError(f"{files.dir} already holds the certificate of "
                                f"{existing.device_id} (serial {existing.serial})",
                                hint="the renewal agent renews it; enrol into an empty "
                                "directory")
        key = load_key(files.pending_key)
        if key is None or KeyType.of(key) is not kind:
            key = kind.generate()
            write_staged_key(files, key, pending=True)
        csr = make_csr(key, common_name=common_name, serial_number=serial_number)
        deadline = time.monotonic() + wait
        while True:
            try:
                cert = (client.simpleenroll(csr, basic=secret) if secret is not None
                        else client.simpleenroll(csr, client_cert=claim))
                break
            except EnrolmentPending as pending:
                left = deadline - time.monotonic()
                if pending.retry_after > left:
                    raise
                log.info("enrolment awaits approval; asking %s again in %d s", client.url,
                         pending.retry_after)
                if stop is not None and stop.wait(pending.retry_after):
                    raise
                if stop is None:
                    time.sleep(pending.retry_after)
        pair = Pair(cert, key)
        check_issued(pair, ca, clock())
        install_enrolled(files, cert)
    log.info("enrolled %s: certificate %s until %s", pair.device_id, pair.serial,
             _iso(cert.not_valid_after_utc))
    return DeviceCertificate.of(pair, files)


@dataclass
class _Backoff:
    failures: int = 0
    retry_at: datetime | None = None
    error: str | None = None
    renew_at: dict[int, datetime] = field(default_factory=dict)


class RenewalAgent:
    """Keeps the certificate in ``dir`` renewed over EST (see the module docstring).

    ``renew_before`` replaces the two-thirds rule: renew when at most this much of the
    lifetime is left (still with jitter). ``clock`` and ``rng`` are for tests and
    simulations; ``on_renewed`` is called (on the agent's thread) with the new certificate
    once its files are in place, e.g. to reconnect an MQTT client with them."""

    def __init__(self, dir: str | Path, server: str | EstClient, ca_file: str | Path, *,
                 label: str | None = None, key_type: KeyType | str = KeyType.ECDSA_P256,
                 renew_before: timedelta | None = None, min_backoff: float = 60.0,
                 max_backoff: float = 3600.0, max_sleep: float = 3600.0,
                 timeout: float = 30.0, clock: Clock = _now,
                 rng: random.Random | None = None,
                 on_renewed: Callable[[DeviceCertificate], None] | None = None) -> None:
        if not 0 < min_backoff <= max_backoff:
            raise InvalidInputError("the backoff bounds must be 0 < min <= max")
        if renew_before is not None and renew_before <= timedelta(0):
            raise InvalidInputError("renew_before must be positive")
        self.files = DeviceFiles(Path(dir))
        self.ca_file = Path(ca_file)
        self.client = _client_or_url(server, self.ca_file, label, timeout)
        self.key_type = _key_type(key_type)
        self.renew_before = renew_before
        self.min_backoff, self.max_backoff, self.max_sleep = min_backoff, max_backoff, max_sleep
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._on_renewed = on_renewed
        self._state = _Backoff()
        self._renewed_at: datetime | None = None

    # --- schedule -------------------------------------------------------------------------

    def renew_at(self, cert: x509.Certificate) -> datetime:
        """When ``cert`` is due, drawn once per certificate (see the module docstring)."""
        known = self._state.renew_at.get(cert.serial_number)
        if known is not None:
            return known
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        lifetime = end - start
        point = (end - self.renew_before if self.renew_before is not None
                 else start + lifetime * RENEW_FRACTION)
        moment = point + lifetime * self._rng.uniform(-RENEW_JITTER, RENEW_JITTER)
        moment = min(max(moment, start), end)
        self._state.renew_at = {cert.serial_number: moment}
        return moment

    def _due(self, pair: Pair) -> datetime:
        """When ``pair`` is renewed: its :meth:`renew_at`, but never sooner than
        ``min_backoff`` after this agent's last renewal (a ``renew_before`` as long as the
        lifetime must not make it renew without a pause)."""
        moment = self.renew_at(pair.cert)
        if self._renewed_at is not None:
            moment = max(moment, self._renewed_at + timedelta(seconds=self.min_backoff))
        return moment

    def _backoff(self, exc: IotsecError) -> float:
        self._state.failures += 1
        ceiling = min(self.max_backoff, self.min_backoff * 2 ** min(self._state.failures - 1,
                                                                    30))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        asked = getattr(exc, "retry_after", None)
        return max(delay, float(asked)) if isinstance(asked, int) else delay

    # --- one step -------------------------------------------------------------------------

    def current(self) -> DeviceCertificate:
        """The certificate in use (after finishing an interrupted change)."""
        with directory_lock(self.files):
            return DeviceCertificate.of(recover(self.files), self.files)

    def run_once(self) -> AgentStatus:
        """Finish an interrupted change, prove a pair not yet proven, renew if due. Never
        raises for a failed renewal (the status says ``retrying``); raises only when the
        directory holds no usable pair or another process holds it."""
        now = self._clock()
        with directory_lock(self.files):
            pair = recover(self.files)
            state = self._state
            if state.retry_at is not None and now < state.retry_at:
                return self._status("retrying", pair, state.retry_at, state.error)
            done: AgentState = "waiting"
            try:
                try:
                    if self.files.has_previous():
                        self._prove(pair, now)
                        done = "proven"
                    if now >= self._due(pair):
                        pair = self._renew(pair, now)
                        self._renewed_at = now
                        done = "renewed"
                        self._prove(pair, now)
                except OSError as exc:
                    raise os_error(exc) from None
            except IotsecError as exc:
                retry_at = now + timedelta(seconds=self._backoff(exc))
                state.retry_at, state.error = retry_at, str(exc)
                log.warning("renewal of %s failed (%s); next attempt at %s", pair.device_id,
                            exc, _iso(retry_at))
                return self._status("retrying", pair, retry_at, state.error)
            self._state = _Backoff(renew_at=state.renew_at)
            return self._status(done, pair, max(self._due(pair), now), None)

    def _status(self, state: AgentState, pair: Pair, next_check: datetime,
                error: str | None) -> AgentStatus:
        return AgentStatus(state, DeviceCertificate.of(pair, self.files),
                           self.renew_at(pair.cert), next_check, error)

    def _renew(self, current: Pair, now: datetime) -> Pair:
        # A key staged by an attempt whose answer never came (a dropped connection, a
        # crash): ask again with it, and the server answers the certificate it issued then.
        key = load_key(self.files.new_key)
        if key is None or KeyType.of(key) is not self.key_type:
            key = self.key_type.generate()
            write_staged_key(self.files, key, pending=False)
        try:
            cert = self.client.simplereenroll(make_csr(key, common_name=current.device_id),
                                              self.files.cert, self.files.key)
            new = Pair(cert, key)
            check_issued(new, load_ca(self.ca_file), now, device_id=current.device_id)
            write_staged_cert(self.files, cert)
        except (EstError, ThrottledError, OSError):
            raise  # no answer, or not yet: the staged key is kept for the next attempt
        except BaseException:
            self.files.new_key.unlink(missing_ok=True)
            raise
        promote(self.files, current)
        log.info("renewed %s: certificate %s until %s (replaces %s)", new.device_id,
                 new.serial, _iso(cert.not_valid_after_utc), current.serial)
        if self._on_renewed is not None:
            self._on_renewed(DeviceCertificate.of(new, self.files))
        return new

    def _prove(self, pair: Pair, now: datetime) -> None:
        """Drop the previous pair once ``pair`` is proven: it chains to the CA with its own
        key, and the EST server accepts it in a TLS handshake."""
        check_issued(pair, load_ca(self.ca_file), now)
        self.client.cacerts(client_cert=(self.files.cert, self.files.key))
        drop_previous(self.files)
        log.info("the certificate %s of %s is proven; the previous pair is removed",
                 pair.serial, pair.device_id)

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event,
            on_status: Callable[[AgentStatus], None] | None = None) -> None:
        """:meth:`run_once` until ``stop`` is set, sleeping until the next check (at most
        ``max_sleep`` seconds at a time, so that a changed clock is noticed)."""
        while not stop.is_set():
            status = self.run_once()
            if on_status is not None:
                on_status(status)
            delay = (status.next_check - self._clock()).total_seconds()
            stop.wait(min(max(delay, 1.0), self.max_sleep))
