"""The device SDK against a real ``iotsec serve`` with its EST listener: enrolment with a
bootstrap secret and by claim, 202 until an operator approves, renewal at about two thirds
of the lifetime (with an injected clock), the old pair kept until the new one is proven
(and kept when the proof fails), and a renewal interrupted at every write."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotsec.device import (
    DeviceCertificate,
    EnrolmentAuthError,
    EnrolmentForbiddenError,
    EnrolmentPending,
    EstClient,
    EstError,
    RenewalAgent,
    enrol,
)
from iotsec.errors import ConflictError
from iotsec.pki.serial import format_serial
from iotsec.sdk import credentials
from iotsec.sdk.credentials import Pair, check_issued, load_ca, load_key, load_pair, make_csr
from tests.enrol.sdk_support import claim_ca, claim_files, operator, secret, template, usable_pair
from tests.security.serving import Served

SENSORS = "sdk-sensors"


@pytest.fixture(scope="module")
def sensors(est_server: Served) -> tuple[str, str]:
    """A template whose devices take their id from the CSR's CN, and a secret for many."""
    template(est_server, SENSORS, "--id-from", "csr-cn")
    return secret(est_server, template=SENSORS, uses=100)


def _enrolled(server: Served, sensors: tuple[str, str], tmp_path: Path, name: str
              ) -> DeviceCertificate:
    return enrol(server.est_url, dir=tmp_path / name, ca_file=server.chain, secret=sensors,
                 common_name=name)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _fraction(cert: DeviceCertificate, moment: datetime) -> float:
    return (moment - cert.not_before) / (cert.not_after - cert.not_before)


# --- enrolment -----------------------------------------------------------------------------


def test_enrol_with_a_device_bound_secret(est_server: Served, tmp_path: Path) -> None:
    operator(est_server, "device", "add", "sdk-bound-1")
    credential = secret(est_server, device="sdk-bound-1")
    # The name the device asks for is ignored: the secret is bound to sdk-bound-1.
    got = enrol(est_server.est_url, dir=tmp_path / "d", ca_file=est_server.chain,
                secret=credential, common_name="someone-else")
    assert got.device_id == "sdk-bound-1"
    pair = usable_pair(tmp_path / "d", est_server)
    assert pair.serial == got.serial
    assert (tmp_path / "d" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [".lock", "cert.pem",
                                                                   "key.pem"]
    # Used once: the same secret enrols nothing more.
    with pytest.raises(EnrolmentAuthError):
        enrol(est_server.est_url, dir=tmp_path / "again", ca_file=est_server.chain,
              secret=credential)
    events = operator(est_server, "events", "list", "--device", "sdk-bound-1")
    assert "est.enrolled" in {e["kind"] for e in events}
    assert credential[1] not in str(events)


def test_enrol_by_claim_certificate_once(est_server: Served, tmp_path: Path) -> None:
    template(est_server, "sdk-factory", "--id-from", "serial-number")
    maker = claim_ca(est_server, "sdk-acme", "sdk-factory", tmp_path)
    claim = claim_files(maker, "HW-SDK-0001", tmp_path)
    deadline = time.monotonic() + 15
    while True:  # the listener loads a claim CA added while serving within seconds
        try:
            got = enrol(est_server.est_url, dir=tmp_path / "d", ca_file=est_server.chain,
                        claim=claim)
            break
        except EstError:
            assert time.monotonic() < deadline, "the claim CA was never trusted"
            time.sleep(0.5)
    assert got.device_id == "HW-SDK-0001"
    usable_pair(tmp_path / "d", est_server)
    with pytest.raises(EnrolmentForbiddenError):
        enrol(est_server.est_url, dir=tmp_path / "twice", ca_file=est_server.chain,
              claim=claim)


def test_202_until_approved_then_the_same_key_gets_the_certificate(
        est_server: Served, tmp_path: Path) -> None:
    template(est_server, "sdk-guarded", "--id-from", "csr-cn", "--require-approval")
    credential = secret(est_server, template="sdk-guarded")
    device = tmp_path / "d"

    def poll() -> DeviceCertificate:
        return enrol(est_server.est_url, dir=device, ca_file=est_server.chain,
                     secret=credential, common_name="sdk-waiting-1", label="sdk-guarded",
                     wait=0)

    with pytest.raises(EnrolmentPending) as pending:
        poll()
    assert 1 <= pending.value.retry_after <= 86_400
    key = load_key(device / "key.pending.pem")
    assert key is not None and not (device / "cert.pem").exists()
    waiting = operator(est_server, "device", "list", "--state", "awaiting-approval")
    assert "sdk-waiting-1" in {d["id"] for d in waiting}
    with pytest.raises(EnrolmentPending):
        poll()  # asking again (the one-use secret is not used up by waiting)
    operator(est_server, "device", "approve", "sdk-waiting-1")
    got = poll()
    assert got.device_id == "sdk-waiting-1"
    pair = usable_pair(device, est_server)
    assert credentials.key_pem(pair.key) == credentials.key_pem(key)


def test_cacerts_csrattrs_and_serverkeygen_against_the_server(
        est_server: Served, tmp_path: Path) -> None:
    client = EstClient(est_server.est_url, ca_file=est_server.chain)
    chain = load_ca(est_server.chain)
    assert {c.subject for c in client.cacerts()} <= {c.subject for c in chain}
    assert client.csrattrs()[:1] in (b"", b"\x30")  # empty, or a DER SEQUENCE
    operator(est_server, "device", "add", "sdk-keygen-1")
    credential = secret(est_server, device="sdk-keygen-1")
    made = client.serverkeygen(make_csr(ec.generate_private_key(ec.SECP256R1())),
                               basic=credential)
    key = serialization.load_der_private_key(made.key_pkcs8_der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    check_issued(Pair(made.certificate, key), chain, datetime.now(UTC))
    assert Pair(made.certificate, key).device_id == "sdk-keygen-1"


# --- renewal -------------------------------------------------------------------------------


def test_renewal_at_about_two_thirds_of_the_lifetime(est_server: Served,
                                                      sensors: tuple[str, str],
                                                      tmp_path: Path) -> None:
    first = _enrolled(est_server, sensors, tmp_path, "sdk-renew-1")
    old = load_pair(first.cert_file, first.key_file)
    assert old is not None
    clock = Clock(first.not_before + (first.not_after - first.not_before) / 2)
    seen: list[tuple[DeviceCertificate, bool]] = []

    def renewed(new: DeviceCertificate) -> None:
        seen.append((new, (tmp_path / "sdk-renew-1" / "cert.prev.pem").exists()))

    agent = RenewalAgent(tmp_path / "sdk-renew-1", est_server.est_url, est_server.chain,
                         clock=clock, rng=random.Random(7), on_renewed=renewed)
    status = agent.run_once()
    assert status.state == "waiting" and status.next_check == status.renew_at
    assert 2 / 3 - 0.1 <= _fraction(first, status.renew_at) <= 2 / 3 + 0.1
    clock.now = status.renew_at - timedelta(seconds=1)
    assert agent.run_once().state == "waiting"
    clock.now = status.renew_at
    status = agent.run_once()
    assert status.state == "renewed", status.error
    new = usable_pair(tmp_path / "sdk-renew-1", est_server)
    assert new.serial == status.certificate.serial != old.serial
    assert new.device_id == "sdk-renew-1"
    assert credentials.key_pem(new.key) != credentials.key_pem(old.key)  # a new key
    # The callback ran with the old pair still on disk; once proven it was dropped.
    assert [(c.serial, prev) for c, prev in seen] == [(new.serial, True)]
    assert not (tmp_path / "sdk-renew-1" / "cert.prev.pem").exists()
    assert not (tmp_path / "sdk-renew-1" / "key.prev.pem").exists()
    # The server took the old certificate out of use: it cannot re-enrol again.
    old_files = tmp_path / "old"
    old_files.mkdir()
    (old_files / "cert.pem").write_bytes(credentials.cert_pem(old.cert))
    (old_files / "key.pem").write_bytes(credentials.key_pem(old.key))
    with pytest.raises(EnrolmentForbiddenError):
        EstClient(est_server.est_url, ca_file=est_server.chain).simplereenroll(
            make_csr(old.key), old_files / "cert.pem", old_files / "key.pem")


def test_the_renewal_moment_is_jittered_per_certificate(est_server: Served,
                                                        sensors: tuple[str, str],
                                                        tmp_path: Path) -> None:
    cert = _enrolled(est_server, sensors, tmp_path, "sdk-jitter-1")
    moments = set()
    for seed in range(40):
        agent = RenewalAgent(tmp_path / "sdk-jitter-1", est_server.est_url, est_server.chain,
                             rng=random.Random(seed))
        pair = load_pair(cert.cert_file, cert.key_file)
        assert pair is not None
        at = agent.renew_at(pair.cert)
        assert agent.renew_at(pair.cert) == at  # drawn once per certificate
        moments.add(round(_fraction(cert, at), 3))
    assert len(moments) > 30
    assert min(moments) >= 2 / 3 - 0.1 and max(moments) <= 2 / 3 + 0.1
    assert min(moments) < 0.62 and max(moments) > 0.71  # spread over the whole window


def test_the_old_pair_is_kept_when_the_new_one_is_not_proven(
        est_server: Served, sensors: tuple[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    device = tmp_path / "sdk-unproven-1"
    first = _enrolled(est_server, sensors, tmp_path, "sdk-unproven-1")
    old_cert, old_key = first.cert_file.read_bytes(), first.key_file.read_bytes()
    clock = Clock(first.not_after - timedelta(days=1))
    agent = RenewalAgent(device, est_server.est_url, est_server.chain, clock=clock,
                         min_backoff=60, max_backoff=600)
    real_cacerts = EstClient.cacerts

    def refused(self: EstClient, **kw: Any) -> Any:
        if kw.get("client_cert") is not None:
            raise EstError("TLS with the EST server failed: simulated")
        return real_cacerts(self, **kw)

    monkeypatch.setattr(EstClient, "cacerts", refused)
    status = agent.run_once()
    assert status.state == "retrying" and "simulated" in str(status.error)
    assert 30 <= (status.next_check - clock.now).total_seconds() <= 60
    # The new pair is in use; the old one is kept beside it.
    assert first.cert_file.read_bytes() != old_cert
    assert (device / "cert.prev.pem").read_bytes() == old_cert
    assert (device / "key.prev.pem").read_bytes() == old_key
    assert load_pair(device / "cert.prev.pem", device / "key.prev.pem") is not None
    # Before the backoff is over nothing is tried; a second failure waits longer.
    clock.now += timedelta(seconds=10)
    assert agent.run_once().next_check == status.next_check
    clock.now = status.next_check
    again = agent.run_once()
    assert again.state == "retrying"
    assert 60 <= (again.next_check - clock.now).total_seconds() <= 120
    assert (device / "cert.prev.pem").read_bytes() == old_cert
    monkeypatch.setattr(EstClient, "cacerts", real_cacerts)
    # Proven at last (by an agent on the real clock: the new certificate is not due).
    proven = RenewalAgent(device, est_server.est_url, est_server.chain).run_once()
    assert proven.state == "proven", proven.error
    assert not (device / "cert.prev.pem").exists() and not (device / "key.prev.pem").exists()
    usable_pair(device, est_server)


def test_a_lost_renewal_answer_is_asked_for_again_with_the_same_key(
        est_server: Served, sensors: tuple[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    device = tmp_path / "sdk-lost-1"
    first = _enrolled(est_server, sensors, tmp_path, "sdk-lost-1")
    clock = Clock(first.not_after - timedelta(days=1))
    agent = RenewalAgent(device, est_server.est_url, est_server.chain, clock=clock,
                         min_backoff=60, max_backoff=600)
    real = EstClient.simplereenroll
    answered: list[str] = []

    def lost(self: EstClient, *args: Any, **kw: Any) -> Any:
        # The server issues; the connection drops before the answer reaches the device.
        cert = real(self, *args, **kw)
        answered.append(format_serial(cert.serial_number))
        raise EstError("cannot talk to the EST server: ConnectionResetError: simulated")

    monkeypatch.setattr(EstClient, "simplereenroll", lost)
    status = agent.run_once()
    assert status.state == "retrying" and "simulated" in str(status.error)
    assert status.certificate.serial == first.serial  # still the old pair in use
    assert (device / "key.new.pem").exists()  # the key the server certified is kept
    monkeypatch.setattr(EstClient, "simplereenroll", real)
    clock.now = status.next_check
    again = agent.run_once()
    assert again.state == "renewed", again.error
    # The server answered the certificate it had issued, not a second one.
    assert [again.certificate.serial] == answered
    usable_pair(device, est_server)


def test_backoff_when_the_server_is_unreachable(est_server: Served, sensors: tuple[str, str],
                                               tmp_path: Path) -> None:
    first = _enrolled(est_server, sensors, tmp_path, "sdk-offline-1")
    closed = f"https://127.0.0.1:{_closed_port()}"
    clock = Clock(first.not_after - timedelta(days=1))
    agent = RenewalAgent(tmp_path / "sdk-offline-1", closed, est_server.chain, clock=clock,
                         min_backoff=10, max_backoff=40, rng=random.Random(3))
    delays = []
    for _ in range(5):
        status = agent.run_once()
        assert status.state == "retrying" and "cannot talk" in str(status.error)
        delays.append((status.next_check - clock.now).total_seconds())
        clock.now = status.next_check
    for n, delay in enumerate(delays):
        ceiling = min(40, 10 * 2 ** n)
        assert ceiling / 2 <= delay <= ceiling, delays
    assert load_pair(first.cert_file, first.key_file) is not None
    # The key staged for the renewal is kept (one, reused by every attempt): the server may
    # have answered a request whose answer was lost.
    assert sorted(p.name for p in (tmp_path / "sdk-offline-1").iterdir()) == [
        ".lock", "cert.pem", "key.new.pem", "key.pem"]


def test_one_agent_per_directory(est_server: Served, sensors: tuple[str, str],
                                 tmp_path: Path) -> None:
    first = _enrolled(est_server, sensors, tmp_path, "sdk-locked-1")
    agent = RenewalAgent(tmp_path / "sdk-locked-1", est_server.est_url, est_server.chain,
                         clock=Clock(first.not_after - timedelta(days=1)))
    with credentials.directory_lock(credentials.DeviceFiles(tmp_path / "sdk-locked-1")), \
            pytest.raises(ConflictError, match="another process"):
        agent.run_once()
    assert agent.run_once().state == "renewed"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- crash safety --------------------------------------------------------------------------


class Crash(BaseException):
    """The process dies here (nothing after it runs, not even error handling)."""


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[str]]:
    """Make the N-th file change of the credentials module (an atomic write or a rename)
    crash before it happens; returns the steps seen."""

    def arm(n: int) -> list[str]:
        steps: list[str] = []
        real_write, real_replace = credentials._write, os.replace

        def step(name: str) -> None:
            steps.append(name)
            if len(steps) == n:
                raise Crash(name)

        def write(path: Path, data: bytes, mode: int) -> None:
            step(f"write {path.name}")
            real_write(path, data, mode)

        def replace(src: Any, dst: Any) -> None:
            step(f"rename {Path(src).name} {Path(dst).name}")
            real_replace(src, dst)

        class Os:
            def __getattr__(self, name: str) -> Any:
                return replace if name == "replace" else getattr(os, name)

        monkeypatch.setattr(credentials, "_write", write)
        monkeypatch.setattr(credentials, "os", Os())
        return steps

    return arm


RENEWAL_STEPS = ["write key.new.pem", "write cert.new.pem", "write key.prev.pem",
                 "write cert.prev.pem", "rename key.new.pem key.pem",
                 "rename cert.new.pem cert.pem"]


@pytest.mark.parametrize("step", range(1, len(RENEWAL_STEPS) + 2))
def test_a_renewal_interrupted_at_any_write_leaves_a_usable_pair(
        est_server: Served, sensors: tuple[str, str], tmp_path: Path, step: int,
        crash_at: Callable[[int], list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sdk-crash-{step}"
    device = tmp_path / name
    first = _enrolled(est_server, sensors, tmp_path, name)
    agent = RenewalAgent(device, est_server.est_url, est_server.chain,
                         clock=Clock(first.not_after - timedelta(days=1)))
    steps = crash_at(step)
    if step <= len(RENEWAL_STEPS):
        with pytest.raises(Crash):
            agent.run_once()
    else:
        assert agent.run_once().state == "renewed"  # no crash: the whole sequence
    assert steps[:len(RENEWAL_STEPS)] == RENEWAL_STEPS[:step]
    monkeypatch.undo()
    # A new process finds a usable pair (finishing the change where it can).
    current = RenewalAgent(device, est_server.est_url, est_server.chain).current()
    pair = usable_pair(device, est_server)
    assert current.serial == pair.serial
    if step <= 2:  # the new certificate was not on disk yet: the old pair stays
        assert pair.serial == first.serial
    else:
        assert pair.serial != first.serial
    status = RenewalAgent(device, est_server.est_url, est_server.chain).run_once()
    unproven = 2 < step <= len(RENEWAL_STEPS)  # the old pair is still beside the new one
    assert status.state == ("proven" if unproven else "waiting"), status.error
    assert {p.name for p in device.iterdir()} == {".lock", "cert.pem", "key.pem"}


def test_an_interrupted_enrolment_is_finished_not_repeated(
        est_server: Served, tmp_path: Path, crash_at: Callable[[int], list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    operator(est_server, "device", "add", "sdk-crash-enrol")
    credential = secret(est_server, device="sdk-crash-enrol")  # one use only
    device = tmp_path / "d"
    steps = crash_at(3)  # the key is written, the certificate too, the key not yet moved
    with pytest.raises(Crash):
        enrol(est_server.est_url, dir=device, ca_file=est_server.chain, secret=credential)
    assert steps == ["write key.pending.pem", "write cert.pem",
                     "rename key.pending.pem key.pem"]
    monkeypatch.undo()
    got = RenewalAgent(device, est_server.est_url, est_server.chain).current()
    assert got.device_id == "sdk-crash-enrol"
    usable_pair(device, est_server)

