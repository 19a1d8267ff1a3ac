"""A device's state changed and carried to the broker at once: when ``IOTSEC_BROKER_DIR``
(or ``broker_dir``) names a rendered Mosquitto directory, disabling a device re-renders the
broker's own CRL (its certificates held: refused at the TLS handshake) and its ACL, reloads
the broker and drops the device's live session; enabling it lifts the hold."""

from __future__ import annotations

from pathlib import Path

from iotsec.app.broker.build import options_of
from iotsec.app.broker.mosquitto import SyncResult, sync
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.errors import BrokerError
from iotsec.identity.registry import Device, DeviceState

__all__ = ["broker_layout", "change_state_and_sync", "sync_after"]


def broker_layout(rt: Runtime, broker_dir: Path | None) -> Layout | None:
    """The broker directory to carry a change to (``broker_dir``, else
    ``IOTSEC_BROKER_DIR``), refused before the change when it was never rendered."""
    directory = broker_dir if broker_dir is not None else rt.settings.broker_dir
    if directory is None:
        return None
    layout = Layout.parse(directory)
    options_of(layout)
    return layout


def sync_after(rt: Runtime, layout: Layout | None, what: str) -> SyncResult | None:
    """Sync the broker after a committed change; a failure says the change is recorded."""
    if layout is None:
        return None
    try:
        return sync(rt, layout.root)
    except BrokerError as exc:
        raise BrokerError(
            f"{what} is recorded, but the broker in {layout.root} was not synced: {exc}",
            hint=f"fix the cause and run 'iotsec broker mosquitto sync {layout.root}'; until "
            "then the broker enforces the previous rules") from exc


def change_state_and_sync(rt: Runtime, device_id: str, target: DeviceState, *,
                          actor: str | None = None, broker_dir: Path | None = None) -> Device:
    """:func:`iotsec.app.identity.lifecycle.change_state`, then the broker synced."""
    layout = broker_layout(rt, broker_dir)
    device = change_state(rt, device_id, target, actor=actor)
    sync_after(rt, layout, f"device {device.id} {target.value}")
    return device
