"""A change of the CA hierarchy (a rotation, an imported issuing CA, a retirement) made
and carried to the broker at once: the broker's trust bundle and CRLs are re-rendered
from the new states, and the running broker reloads them (as ``broker mosquitto sync``
does) when ``IOTSEC_BROKER_DIR`` names a rendered broker directory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iotsec.app.broker.build import options_of
from iotsec.app.broker.mosquitto import SyncResult, sync
from iotsec.app.pki import authorities, ceremony
from iotsec.app.pki.authorities import AuthorityRecord
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.errors import BrokerError
from iotsec.pki.keys import KeyType

__all__ = ["CaChange", "import_ca", "retire_ca", "rotate_ca"]


@dataclass(frozen=True)
class CaChange:
    changed: tuple[AuthorityRecord, ...]
    broker: SyncResult | None


def _broker(rt: Runtime, broker_dir: Path | None) -> Layout | None:
    directory = broker_dir if broker_dir is not None else rt.settings.broker_dir
    if directory is None:
        return None
    layout = Layout.parse(directory)
    options_of(layout)  # a directory that was never rendered is refused before the change
    return layout


def _carry(rt: Runtime, layout: Layout | None, what: str,
           change: Callable[[], Sequence[AuthorityRecord]]) -> CaChange:
    changed = tuple(change())
    if layout is None:
        return CaChange(changed, None)
    try:
        return CaChange(changed, sync(rt, layout.root))
    except BrokerError as exc:
        raise BrokerError(
            f"{what} is done, but the broker in {layout.root} was not re-rendered: {exc}",
            hint=f"fix the cause and run 'iotsec broker mosquitto sync {layout.root}'"
        ) from exc


def rotate_ca(rt: Runtime, *, new_root: bool = False, cross: bool = True,
              key_type: KeyType | None = None, broker_dir: Path | None = None) -> CaChange:
    """:func:`iotsec.app.pki.authorities.rotate`, then the broker re-rendered and reloaded
    (``broker_dir``, default ``IOTSEC_BROKER_DIR``). ``changed``: the new CAs, then those
    now retiring."""
    layout = _broker(rt, broker_dir)

    def change() -> list[AuthorityRecord]:
        done = authorities.rotate(rt, new_root=new_root, cross=cross, key_type=key_type)
        made = [a for a in (done.issuing, done.root, done.cross) if a is not None]
        return [*made, *done.retiring]
    return _carry(rt, layout, "the rotation", change)


def retire_ca(rt: Runtime, authority_id: int, *, broker_dir: Path | None = None) -> CaChange:
    """:func:`iotsec.app.pki.authorities.retire`, then the broker re-rendered and reloaded:
    the retired CA leaves its trust bundle, so its certificates are refused."""
    layout = _broker(rt, broker_dir)
    return _carry(rt, layout, f"retiring CA {authority_id}",
                  lambda: authorities.retire(rt, authority_id))


def import_ca(rt: Runtime, certificate: bytes, *, broker_dir: Path | None = None) -> CaChange:
    """:func:`iotsec.app.pki.ceremony.import_issuing` (the last step of the offline-root
    ceremony), then the broker re-rendered and reloaded."""
    layout = _broker(rt, broker_dir)
    return _carry(rt, layout, "the import", lambda: ceremony.import_issuing(rt, certificate))
