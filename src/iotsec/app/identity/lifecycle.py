"""Device lifecycle changes that touch certificates: disable, enable, retire."""

from __future__ import annotations

from iotsec.app.events import Event
from iotsec.app.identity.bindings import policy_changed
from iotsec.app.identity.devices import get_device, set_state
from iotsec.app.pki.revocation import revoke_device_certificates
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import Device, DeviceState, parse_device_id
from iotsec.pki.crl import RevocationReason
from iotsec.store.db import transaction
from iotsec.timeutil import ts

__all__ = ["change_state"]


def change_state(rt: Runtime, device_id: str, target: DeviceState, *,
                 actor: str | None = None) -> Device:
    """Disable or re-enable a device, or retire it for good.

    Retiring revokes every certificate the device still holds (``cessationOfOperation``)
    in the same transaction. Disabling keeps certificates (it is reversible); the broker
    and the API refuse a disabled device. A ``device.state`` event records the change (old
    and new state, the certificates revoked) in the same transaction.
    """
    device_id = parse_device_id(device_id)
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    with transaction(rt.engine) as conn:
        old = set_state(conn, device_id, target, now)
        revoked: list[str] = []
        if target is DeviceState.RETIRED:
            revoked = revoke_device_certificates(conn, device_id, moment,
                                                 RevocationReason.cessationOfOperation, now)
        if old is not target or revoked:
            rt.events.record_in(conn, Event(moment, "device.state", "success", actor=actor,
                                            subject=device_id, detail={
                                                "from": old.value, "to": target.value,
                                                "revoked": revoked[:100]}))
    policy_changed(rt)
    return get_device(rt, device_id)
