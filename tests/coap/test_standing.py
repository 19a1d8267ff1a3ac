"""The standing of a served certificate (revocation, expiry, the device's state), checked on
every CoAP request and answered from a per-process cache: this process's revocations and
state changes apply to the very next check, another process's within
IOTSEC_HOT_CACHE_SECONDS, and 0 reads the store on every check."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update

from iotsec.app.coap.standing import StandingCache, follow_changes, refusal_now
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import transaction
from tests.broker.support import Creds, enroll


def _elsewhere_disable(rt: Runtime, device_id: str) -> None:
    """What another process's change looks like here: a committed write, no mark moved in
    this process."""
    with transaction(rt.engine) as conn:
        conn.execute(update(m.devices).where(m.devices.c.id == device_id)
                     .values(state=DeviceState.DISABLED.value))


def _check(rt: Runtime, c: Creds) -> str | None:
    return refusal_now(rt, c.serial, c.device_id, rt.now())


def test_this_process_revocation_applies_to_the_next_check(crt: Runtime,
                                                           tmp_path: Path) -> None:
    crt.settings.hot_cache_seconds = 60
    alice = enroll(crt, "alice", tmp_path)
    assert _check(crt, alice) is None
    assert _check(crt, alice) is None  # now from the cache
    revoke(crt, alice.serial)
    assert _check(crt, alice) == f"certificate {alice.serial} is revoked"


def test_this_process_state_change_applies_to_the_next_check(crt: Runtime,
                                                             tmp_path: Path) -> None:
    crt.settings.hot_cache_seconds = 60
    alice = enroll(crt, "alice", tmp_path)
    assert _check(crt, alice) is None
    change_state(crt, "alice", DeviceState.DISABLED)
    assert _check(crt, alice) == "device 'alice' is disabled"
    change_state(crt, "alice", DeviceState.ACTIVE)
    assert _check(crt, alice) is None


def test_another_process_change_is_seen_within_the_hot_cache_delay(crt: Runtime,
                                                                   tmp_path: Path) -> None:
    crt.settings.hot_cache_seconds = 0.3
    alice = enroll(crt, "alice", tmp_path)
    assert _check(crt, alice) is None
    _elsewhere_disable(crt, "alice")
    # Within the delay the entry read before the write may still answer; after it, the
    # store is read again.
    time.sleep(0.4)
    assert _check(crt, alice) == "device 'alice' is disabled"


def test_entries_are_reused_within_the_delay(crt: Runtime, tmp_path: Path) -> None:
    crt.settings.hot_cache_seconds = 60
    alice = enroll(crt, "alice", tmp_path)
    cache = StandingCache()
    first = cache.standing(crt, alice.serial)
    assert first is not None and first.state == "active"
    _elsewhere_disable(crt, "alice")
    assert cache.standing(crt, alice.serial) is first
    fresh = cache.standing(crt, alice.serial, fresh=True)
    assert fresh is not None and fresh.state == "disabled"
    assert len(cache) == 1


def test_no_delay_reads_the_store_on_every_check(crt: Runtime, tmp_path: Path) -> None:
    crt.settings.hot_cache_seconds = 0
    alice = enroll(crt, "alice", tmp_path)
    assert _check(crt, alice) is None
    _elsewhere_disable(crt, "alice")
    assert _check(crt, alice) == "device 'alice' is disabled"


def test_an_unknown_certificate_is_refused(crt: Runtime) -> None:
    crt.settings.hot_cache_seconds = 60
    assert refusal_now(crt, "7f" * 8, "alice", crt.now()) == \
        f"certificate {'7f' * 8} is unknown"


def _elsewhere_revoke(rt: Runtime, serial: str) -> None:
    with transaction(rt.engine) as conn:
        conn.execute(update(m.certificates).where(m.certificates.c.serial == serial)
                     .values(revoked_at=int(time.time()) - 1, revocation_reason=1))


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_another_process_change_arrives_by_the_change_feed(crt: Runtime,
                                                           tmp_path: Path) -> None:
    """On PostgreSQL a change committed elsewhere drops what it concerns at once: with a
    60 s delay, only the feed explains a refusal within 2 s."""
    crt.settings.hot_cache_seconds = 60
    alice = enroll(crt, "alice", tmp_path)
    bob = enroll(crt, "bob", tmp_path)
    follow_changes(crt)
    assert _check(crt, alice) is None and _check(crt, bob) is None
    time.sleep(0.5)  # the listener is connected (its first revalidation has passed)
    assert _check(crt, alice) is None and _check(crt, bob) is None  # held
    _elsewhere_disable(crt, "alice")
    assert _within(2, lambda: _check(crt, alice) == "device 'alice' is disabled")
    _elsewhere_revoke(crt, bob.serial)
    assert _within(2, lambda: _check(crt, bob) == f"certificate {bob.serial} is revoked")
