"""One access decision made from what the store holds: the policy read from its roles and
group bindings, the device's registry entry, and the rules every decision follows (deny
before allow, default deny, a device that is not active is denied whatever its roles say, a
quarantined one gets the quarantine policy only).

:mod:`iotsec.app.access.decisions` decides with these functions from the policy and the
entries it keeps in memory; :func:`decide_on_store` decides once, on a reader, for a
command that asks one question and ends (``iotsec authz check`` run before Typer,
:mod:`iotsec.cli.lean`). Nothing here imports the runtime or the settings model.
"""

from __future__ import annotations

from dataclasses import replace

from iotsec.access.engine import CompiledPolicy, Decision
from iotsec.access.policy import Identity
from iotsec.access.quarantine import QUARANTINE_ROLE, quarantine_role_of
from iotsec.app.access.policy_reads import group_roles, read_roles
from iotsec.app.counters import COUNTERS
from iotsec.app.identity.device_reads import DecisionEntry, entry_parts
from iotsec.errors import NotFoundError
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.store.reader import Reader

__all__ = ["decide", "decide_on_store", "decide_uncounted", "load_policy", "with_serial"]


def load_policy(reader: Reader, quarantine_topic: str
                ) -> tuple[CompiledPolicy, CompiledPolicy]:
    """The policy, and the policy quarantined devices get: the quarantine role only."""
    roles = read_roles(reader)
    quarantined = CompiledPolicy([quarantine_role_of(roles, quarantine_topic)],
                                 every_identity=(QUARANTINE_ROLE,))
    return CompiledPolicy(roles, group_roles=group_roles(reader)), quarantined


def with_serial(registered: Identity, cert_serial: str | None) -> Identity:
    """The registry's identity of a device, with the serial of the certificate used."""
    if not cert_serial:
        return registered
    return replace(registered, cert_serial=format_serial(parse_serial(cert_serial)))


def decide_uncounted(policy: CompiledPolicy, entry: DecisionEntry, action: str,
                     resource: str, cert_serial: str | None) -> Decision:
    """The decision, not yet counted: the policy's answer, then the device's state (a
    quarantined device has been given the quarantine policy by the caller)."""
    identity, state = entry
    if cert_serial:
        identity = with_serial(identity, cert_serial)
    decision = policy.decide(identity, action, resource)
    if state is DeviceState.QUARANTINED:
        # ``policy`` is the quarantine policy here.
        return decision._replace(reason=f"device {identity.device_id!r} is quarantined: "
                                 f"{decision.explanation}")
    if state is not DeviceState.ACTIVE and state is not DeviceState.PENDING:
        return Decision(False, action, resource,
                        reason=f"device {identity.device_id!r} is {state.value} (denied "
                        "whatever its roles allow)")
    return decision


def decide(policy: CompiledPolicy, entry: DecisionEntry, action: str, resource: str,
           cert_serial: str | None) -> Decision:
    """:func:`decide_uncounted`, counted (the ``decisions`` counter, by answer)."""
    decision = decide_uncounted(policy, entry, action, resource, cert_serial)
    COUNTERS.inc("decisions", ("allow" if decision.allowed else "deny",))
    return decision


def decide_on_store(reader: Reader, device_id: str, action: str, resource: str,
                    cert_serial: str | None, *, quarantine_topic: str) -> Decision:
    """Decide once from what ``reader`` reads, as ``decisions.check`` decides: a device id
    that is not valid and a device that is not registered are refused first
    (:class:`~iotsec.errors.InvalidInputError`, :class:`~iotsec.errors.NotFoundError`),
    then the policy is read and the request decided (an action or resource that is not
    valid is refused then). Nothing is kept in memory."""
    device_id = parse_device_id(device_id)
    entry = None
    for part in entry_parts(reader, [device_id]):
        entry = part.get(device_id, entry)
    if entry is None:
        raise NotFoundError(f"device {device_id!r} is not registered",
                            hint="register it with 'iotsec device add'")
    policy, quarantined = load_policy(reader, quarantine_topic)
    chosen = quarantined if entry.state is DeviceState.QUARANTINED else policy
    return decide(chosen, entry, action, resource, cert_serial)
