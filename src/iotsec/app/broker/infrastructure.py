"""Replacing one of iotsec's own certificates: revoke it and issue its replacement at once.

The device commands and routes refuse these certificates (the API's and the broker's server
certificates, the broker's probe and canary): a probe revoked alone would fail every
broker sync's check, each sync would roll back, and the broker's CRL would never change
again. This admin-only use case revokes one and, in the same call, replaces it where it is
held:

- the API's server certificate (``IOTSEC_HOME/server``) is reissued for the same names; a
  running ``iotsec serve`` loads it within seconds (:mod:`iotsec.api.live_tls`);
- a broker directory (the one given, else ``IOTSEC_BROKER_DIR``) is synced: the sync
  reissues a revoked server, probe or canary certificate, pushes the new CRL and reloads a
  running broker.

A certificate nothing holds any more (a previous generation's) is just revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from iotsec.app.broker.build import options_of
from iotsec.app.broker.mosquitto import SyncResult, sync
from iotsec.app.events import Event
from iotsec.app.pki.cert_records import CertificateRecord
from iotsec.app.pki.infrastructure import revoke_infrastructure
from iotsec.app.pki.server_tls import replace_server_tls
from iotsec.app.runtime import Runtime
from iotsec.broker.mosquitto import Layout
from iotsec.errors import BrokerError
from iotsec.pki.crl import RevocationReason
from iotsec.pki.serial import format_serial, parse_serial

__all__ = ["Replaced", "Replacement", "replace_infrastructure"]


@dataclass(frozen=True, slots=True)
class Replaced:
    """Where a revoked certificate was held, and the serial of the one that took its place."""

    holder: str
    serial: str


@dataclass(frozen=True, slots=True)
class Replacement:
    """The outcome: the revoked certificate, its replacements, and the broker sync run."""

    revoked: CertificateRecord
    replaced: tuple[Replaced, ...]
    broker: SyncResult | None


def _leaf_serial(path: Path) -> str | None:
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    return format_serial(cert.serial_number)


def _broker_held(layout: Layout) -> dict[str, str | None]:
    """The serial of each certificate a broker directory holds, by holder name."""
    return {f"broker {layout.root} server": _leaf_serial(layout.current / "server.pem"),
            f"broker {layout.root} probe": _leaf_serial(layout.private / "probe.pem"),
            f"broker {layout.root} canary": _leaf_serial(layout.private / "canary.pem")}


def replace_infrastructure(rt: Runtime, serial: str,
                           reason: RevocationReason = RevocationReason.unspecified, *,
                           broker_dir: Path | None = None) -> Replacement:
    """Revoke one of iotsec's own certificates and replace it at once wherever it is held
    (see the module's description). A device's certificate is refused."""
    key = format_serial(parse_serial(serial))
    directory = broker_dir if broker_dir is not None else rt.settings.broker_dir
    layout = None
    if directory is not None:
        layout = Layout.parse(directory)
        options_of(layout)  # a directory that was never rendered is refused before revoking
    revoked = revoke_infrastructure(rt, key, reason)
    replaced: list[Replaced] = []
    fresh = replace_server_tls(rt, key)
    if fresh is not None:
        replaced.append(Replaced(f"api {rt.settings.server_dir}", fresh))
    result = None
    if layout is not None:
        before = _broker_held(layout)
        try:
            result = sync(rt, layout.root)
        except BrokerError as exc:
            raise BrokerError(
                f"certificate {key} is revoked, but the broker in {layout.root} was not "
                f"synced: {exc}",
                hint=f"fix the cause and run 'iotsec broker mosquitto sync {layout.root}': "
                "every sync reissues a revoked probe, canary or server certificate") from exc
        after = _broker_held(layout)
        replaced += [Replaced(holder, after[holder] or "") for holder, held in before.items()
                     if held == key and after[holder] not in (None, key)]
    rt.events.record(Event(rt.now(), "certificate.replace", "success", subject=key,
                           detail={"kind": revoked.kind, "reason": reason.name,
                                   "replaced_by": [r.serial for r in replaced]}))
    return Replacement(revoked, tuple(replaced), result)

