"""Confirming a generation: the running broker serves and enforces what was rendered (the
probe certificate connects and is refused a publish, the revoked canary is refused)."""

from __future__ import annotations

from iotsec import brokerctl as control
from iotsec.app.broker.build import BrokerOptions
from iotsec.broker.mosquitto import Layout
from iotsec.errors import BrokerReloadError

__all__ = ["confirm"]


def _identity(layout: Layout, name: str) -> control.TlsIdentity:
    return control.TlsIdentity(cert=layout.private / f"{name}.pem",
                               key=layout.private / f"{name}.key", ca=layout.current / "ca.pem")


def _probe_host(options: BrokerOptions) -> str:
    if options.bind == "0.0.0.0":  # noqa: S104
        return "127.0.0.1"
    if options.bind == "::":
        return "::1"
    return options.bind


def confirm(layout: Layout, options: BrokerOptions, *, timeout: float = 3.0) -> None:
    """Prove the running broker serves and enforces the current generation (raises)."""
    host = _probe_host(options)
    result = control.probe(host, options.port, _identity(layout, "probe"), server_name=host,
                           timeout=timeout)
    if not result.connected:
        raise BrokerReloadError(f"the broker does not accept the probe certificate on "
                                f"{host}:{options.port}: {result.error}")
    if not result.enforcing:
        raise BrokerReloadError("the broker is not enforcing its ACL (the probe's publish "
                                f"was answered with reason {result.publish_reason})")
    canary = control.canary_refused(host, options.port, _identity(layout, "canary"),
                                    server_name=host, timeout=timeout)
    if canary != "revoked":
        raise BrokerReloadError("the broker is not enforcing its CRL (the revoked canary "
                                f"certificate got: {canary})")
