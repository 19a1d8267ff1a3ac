"""What every broker integration does, whichever broker it drives (pure).

A :class:`BrokerAdapter` renders two kinds of artefacts and reads them back:

- :meth:`~BrokerAdapter.render_config`: the broker's configuration for the PKI material in
  :class:`PkiFiles` (its listeners, their mutual TLS, how a client is identified and how
  requests are authorised);
- :meth:`~BrokerAdapter.render_policy`: what the broker enforces for a
  :class:`FleetPolicy` (the roles and the fleet): Mosquitto's ``acl_file``, the ACL each
  EMQX authentication carries;
- :meth:`~BrokerAdapter.decide`: how those artefacts decide one (device, action, topic),
  the question the engine (:mod:`iotsec.access`) answers, asked of the broker, and what
  decided it (an ACL line, a first-match rule, the engine behind EMQX's HTTP authorizer).

Brokers do not check the same things. ``checks`` names the MQTT actions a broker decides
itself; for the others a decision says ``checked=False`` and why (Mosquitto 2.0 never
checks SUBSCRIBE, but checks each delivery; EMQX 5 checks SUBSCRIBE, never a delivery).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol, TypeVar

from iotsec.access.policy import MQTT_ACTIONS, Identity, Role
from iotsec.broker.acl import FleetDevice
from iotsec.errors import PolicyError

__all__ = [
    "CA_FILE", "CERT_FILE", "CRL_FILE", "KEY_FILE", "BrokerAdapter", "BrokerDecision",
    "FleetPolicy", "PkiFiles", "check_mqtt_action", "identity_of"
]

#: File names of the PKI material in a broker's directory (both integrations write them).
CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
CRL_FILE = "crl.pem"


@dataclass(frozen=True, slots=True)
class PkiFiles:
    """Where the broker reads its PKI material: the CA chain that client certificates are
    checked against, the server certificate (with its chain) and key, and the CRLs, all in
    ``directory`` on the broker's host."""

    directory: PurePosixPath

    @property
    def ca(self) -> PurePosixPath:
        return self.directory / CA_FILE

    @property
    def certificate(self) -> PurePosixPath:
        return self.directory / CERT_FILE

    @property
    def key(self) -> PurePosixPath:
        return self.directory / KEY_FILE

    @property
    def crl(self) -> PurePosixPath:
        return self.directory / CRL_FILE


@dataclass(frozen=True, slots=True)
class FleetPolicy:
    """The access-control policy as a broker needs it: the roles, every registered device
    with its effective roles, and the roles a device registered later gets by default."""

    roles: tuple[Role, ...]
    devices: tuple[FleetDevice, ...]
    new_device_roles: tuple[str, ...] | None = None


def identity_of(device: FleetDevice) -> Identity:
    """The identity a device connects with: its certificate's CN is its id (both brokers
    take the username from it), the serial is its first current certificate's, and its
    roles are its effective roles."""
    return Identity(device_id=device.id, groups=device.groups, attributes=device.attributes,
                    cert_cn=device.id, cert_serial=device.serials[0] if device.serials else None,
                    roles=device.roles)


def check_mqtt_action(action: str) -> str:
    """``action`` if it is one a broker is asked about (API actions are not)."""
    if action not in MQTT_ACTIONS:
        raise PolicyError(f"{action[:40]!r} is not an MQTT action",
                          hint="a broker decides connect, publish, subscribe and receive")
    return action


@dataclass(frozen=True, slots=True)
class BrokerDecision:
    """How the broker's artefacts decide one request, and what decided it (``by``).

    ``checked`` is False when the broker does not check the action at all; ``allowed`` is
    then True, and ``by`` says which other check stands in for it."""

    allowed: bool
    by: str
    checked: bool = True


P = TypeVar("P")


class BrokerAdapter(Protocol[P]):
    """One broker integration (see the module documentation)."""

    @property
    def name(self) -> str: ...

    @property
    def checks(self) -> frozenset[str]:
        """The MQTT actions the rendered artefacts decide (of connect, publish, subscribe,
        receive)."""
        ...

    def render_config(self, pki: PkiFiles) -> str:
        """The broker's configuration text: mutual-TLS listeners only, no anonymous access,
        and requests nothing grants denied."""
        ...

    def render_policy(self, policy: FleetPolicy) -> P:
        """What the broker enforces for ``policy`` (never more than the engine allows)."""
        ...

    def decide(self, enforced: P, device_id: str, action: str, topic: str) -> BrokerDecision:
        """How ``enforced`` decides ``action`` on ``topic`` (a topic name, or a filter for
        ``subscribe``) for the device ``device_id``. Invalid input raises."""
        ...
