"""EMQX 5 as a :class:`~iotsec.broker.adapter.BrokerAdapter` (pure).

The configuration is the HOCON snippet of :func:`~iotsec.broker.emqx_conf.render_snippet`.
What EMQX enforces for a policy is what each device's authentication answers
(:mod:`iotsec.app.emqx` answers it from the store the same way): a refusal for a device
that is disabled, holds no current certificate or is denied ``connect`` by a rule, else an
``allow`` carrying the device's ACL (:func:`~iotsec.broker.emqx.compile_acl`).

A decision follows EMQX: the ACL, first match wins; a request no rule matches goes to the
HTTP authorizer, which runs the engine. The authorization request carries no certificate,
so the engine decides it without the certificate serial (a rule naming
``${cert.serial}`` then matches nothing: stricter, never looser). EMQX checks CONNECT,
PUBLISH and SUBSCRIBE; it never checks a delivery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity
from iotsec.access.topics import TopicFilter, parse_topic_name
from iotsec.broker.adapter import (
    BrokerDecision,
    FleetPolicy,
    PkiFiles,
    check_mqtt_action,
    identity_of,
)
from iotsec.broker.emqx import EmqxAcl, compile_acl
from iotsec.broker.emqx_conf import EmqxConfig, render_snippet

__all__ = ["HEADER", "EmqxAdapter", "EmqxPolicy"]

HEADER = ("Written by iotsec ('iotsec broker emqx render'); include it from emqx.conf on "
          "every node: include \"<path>/emqx-iotsec.hocon\"")


@dataclass(frozen=True, slots=True)
class EmqxPolicy:
    """What the authentications answer: each admitted device's ACL and identity, the
    refused devices with the reason, and the engine behind the HTTP authorizer."""

    acls: Mapping[str, EmqxAcl]
    identities: Mapping[str, Identity]
    refused: Mapping[str, str]
    engine: CompiledPolicy


class EmqxAdapter:
    """EMQX 5 reaching iotsec at ``api_url`` with the broker ``token`` (which the snippet
    carries, so the snippet is a secret file), its mutual-TLS listener on ``bind:port``."""

    name = "emqx"
    checks = frozenset({"connect", "publish", "subscribe"})

    def __init__(self, api_url: str, token: str, *, bind: str = "127.0.0.1", port: int = 8883,
                 crl_check: bool = False, header: str = HEADER) -> None:
        # Validated now (URL, token, port); the file paths are filled in by render_config.
        self._config = EmqxConfig(api_url=api_url, token=token, bind=bind, port=port,
                                  cacertfile="", certfile="", keyfile="", crl_check=crl_check)
        self._header = header

    def __repr__(self) -> str:
        return f"EmqxAdapter({self._config.api_url!r}, token=<hidden>, port={self._config.port})"

    def render_config(self, pki: PkiFiles) -> str:
        """The HOCON snippet. With ``crl_check`` off, EMQX checks no CRL itself: revocation
        is enforced at each authentication."""
        return render_snippet(dataclasses.replace(
            self._config, cacertfile=str(pki.ca), certfile=str(pki.certificate),
            keyfile=str(pki.key)), self._header)

    def render_policy(self, policy: FleetPolicy) -> EmqxPolicy:
        # Each identity carries its device's effective roles (``identity_of``).
        engine = CompiledPolicy(policy.roles)
        by_name = {r.name: r for r in policy.roles}
        acls: dict[str, EmqxAcl] = {}
        identities: dict[str, Identity] = {}
        refused: dict[str, str] = {}
        for device in policy.devices:
            identity = identity_of(device)
            connect = engine.decide(identity, "connect", device.id)
            if not device.enabled:
                refused[device.id] = "the device is not enabled"
            elif not device.serials:
                refused[device.id] = "the device holds no current certificate"
            elif connect.rule is not None and not connect.allowed:
                refused[device.id] = f"connect denied: {connect.explanation}"
            else:
                identities[device.id] = identity
                acls[device.id] = compile_acl(identity, [
                    by_name[n] for n in engine.roles_for(identity) if n in by_name])
        return EmqxPolicy(acls=acls, identities=identities, refused=refused, engine=engine)

    def decide(self, enforced: EmqxPolicy, device_id: str, action: str,
               topic: str) -> BrokerDecision:
        action = check_mqtt_action(action)
        if action == "subscribe":
            TopicFilter.parse(topic)
        elif action != "connect":
            parse_topic_name(topic)
        acl = enforced.acls.get(device_id)
        if acl is None:
            why = enforced.refused.get(device_id, "not a registered device")
            return BrokerDecision(False, f"authentication refused: {why}")
        if action == "connect":
            return BrokerDecision(True, "authentication allows it (with the device's ACL)")
        if action == "receive":
            return BrokerDecision(True, "EMQX does not check deliveries: a subscription it "
                                  "granted receives every message (subscribe)", checked=False)
        hit = acl.first_match(action, topic)
        if hit is not None:
            index, rule, flt = hit
            return BrokerDecision(rule.permission == "allow", f"ACL rule {index + 1}: "
                                  f"{rule.permission} {rule.action} {flt}")
        identity = dataclasses.replace(enforced.identities[device_id], cert_serial=None)
        decision = enforced.engine.decide(identity, action, topic)
        return BrokerDecision(decision.allowed, f"HTTP authorizer (the engine): "
                              f"{decision.explanation}")
