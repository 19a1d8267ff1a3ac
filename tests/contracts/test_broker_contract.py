"""The broker-adapter contract: every :class:`BrokerAdapter` (Mosquitto, EMQX) passes this
one suite.

Each test runs once per broker (the ``broker`` fixture). What the project relies on:

- the rendered configuration serves devices over mutual TLS only: every network listener
  requires a client certificate checked against the CA of the PKI files, no plaintext
  listener, no anonymous access, the identity taken from the certificate, and a request
  that nothing grants is denied;
- for a generated policy and fleet (Hypothesis, bounded), the broker never allows what the
  engine (:mod:`iotsec.access`) denies, for every action it checks; where the broker is
  exact, it allows exactly what the engine allows; the decision agrees with an independent
  model of the broker (``tests/broker/mosquitto_model.py``, ``tests/emqx/emqx_model.py``);
- it fails closed: nothing is allowed by an empty policy, to a disabled device, or to one
  an explicit ``deny connect`` rule matches, and invalid requests raise.

Where the brokers really differ, the :class:`Broker` entries below say so: which actions
each checks, when it is exact, its local sockets, its CRL check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyhocon
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import MQTT_ACTIONS, Effect, Identity, Role, Rule, default_device_role
from iotsec.broker.acl import FleetDevice, writable
from iotsec.broker.adapter import BrokerAdapter, FleetPolicy, PkiFiles
from iotsec.broker.emqx_adapter import EmqxAdapter, EmqxPolicy
from iotsec.broker.mosquitto import Layout, ListenerSettings
from iotsec.broker.mosquitto_adapter import MosquittoAdapter
from iotsec.errors import InvalidInputError, PolicyError
from tests.broker.mosquitto_model import MosquittoAcl
from tests.emqx.emqx_model import check_rule, evaluate

PKI = PkiFiles(PurePosixPath("/srv/broker/current"))
LAYOUT = Layout.parse(Path("/srv/broker"))
TOKEN = "iotsec_0123456789abcdef_" + "A" * 43


# --- what a rendered configuration says, read independently of iotsec -------------------


@dataclass(frozen=True)
class Listener:
    where: str
    tls: bool
    client_certificate_required: bool
    ca: str | None
    certificate: str | None
    key: str | None
    tls_versions: tuple[str, ...]


@dataclass(frozen=True)
class ConfigFacts:
    listeners: tuple[Listener, ...]  # network listeners
    local_sockets: tuple[str, ...]  # Unix-socket listeners
    anonymous_allowed: bool
    identity_from_certificate: bool
    unmatched_denied: bool
    crl: str | None  # the CRL file the broker checks client certificates against


def mosquitto_facts(text: str) -> ConfigFacts:
    """``mosquitto.conf``: global options, then each ``listener`` line and its options
    (``per_listener_settings false`` keeps authentication options global)."""
    global_: dict[str, str] = {}
    listeners: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "listener":
            listeners.append({"listener": value})
        else:
            (listeners[-1] if listeners else global_)[key] = value
    network, sockets = [], []
    for opts in listeners:
        port, _, bind = opts["listener"].partition(" ")
        if port == "0":
            sockets.append(bind)
            continue
        network.append(Listener(
            where=f"{bind}:{port}", tls="certfile" in opts,
            client_certificate_required=opts.get("require_certificate") == "true",
            ca=opts.get("cafile"), certificate=opts.get("certfile"), key=opts.get("keyfile"),
            # 'tls_version tlsv1.2' is the lowest version accepted; 1.3 is always offered.
            tls_versions=(opts["tls_version"], "tlsv1.3") if "tls_version" in opts else ()))
    tls = [opts for opts in listeners if "certfile" in opts]
    return ConfigFacts(
        listeners=tuple(network), local_sockets=tuple(sockets),
        anonymous_allowed=global_.get("allow_anonymous") != "false",
        identity_from_certificate=bool(tls) and all(
            o.get("use_identity_as_username") == "true"
            and o.get("use_username_as_clientid") == "true" for o in tls),
        # Mosquitto denies what its acl_file does not grant (and allows all without one).
        unmatched_denied="acl_file" in global_,
        crl=tls[0].get("crlfile") if tls else None)


def emqx_facts(text: str) -> ConfigFacts:
    """The HOCON snippet, parsed with a HOCON parser."""
    conf = pyhocon.ConfigFactory.parse_string(text)
    network = []
    for kind in ("tcp", "ws", "wss", "ssl"):
        listener = conf.get(f"listeners.{kind}.default", None)
        if listener is None or listener.get("enable", True) is False:
            continue
        ssl = listener.get("ssl_options", None) if kind in ("ssl", "wss") else None
        network.append(Listener(
            where=str(listener.get("bind")), tls=ssl is not None,
            client_certificate_required=ssl is not None and ssl.get("verify") == "verify_peer"
            and ssl.get("fail_if_no_peer_cert") is True,
            ca=ssl.get("cacertfile") if ssl else None,
            certificate=ssl.get("certfile") if ssl else None,
            key=ssl.get("keyfile") if ssl else None,
            tls_versions=tuple(ssl.get("versions")) if ssl else ()))
    authn = conf.get("authentication", [])
    authz = conf.get("authorization")
    ssl_options = conf.get("listeners.ssl.default.ssl_options")
    return ConfigFacts(
        listeners=tuple(network), local_sockets=(),
        anonymous_allowed=not authn or any(a.get("enable", True) is False for a in authn),
        identity_from_certificate=conf.get("mqtt.peer_cert_as_username") == "cn"
        and conf.get("mqtt.peer_cert_as_clientid") == "cn",
        # Any other source type (EMQX's default file source ends in {allow, all}) could
        # grant what the policy does not.
        unmatched_denied=authz.get("no_match") == "deny"
        and all(s.get("type") == "http" for s in authz.get("sources")),
        crl=str(PKI.crl) if ssl_options.get("enable_crl_check", False) else None)


# --- the brokers, and where they differ --------------------------------------------------


def _names_serial(policy: FleetPolicy) -> bool:
    return any("${cert.serial}" in r.resource for role in policy.roles for r in role.rules)


def _mosquitto_exact(policy: FleetPolicy) -> bool:
    """Mosquitto's ``deny`` lines deny every access (a ``deny publish`` also stops
    deliveries), and a value that cannot be written into the file drops an allow line:
    stricter than the engine then, never looser."""
    denies = any(r.effect is Effect.DENY and r.action != "connect"
                 for role in policy.roles for r in role.rules)
    unsafe = any(not writable(v) for d in policy.devices
                 for v in (*d.attributes.values(), *d.groups))
    return not denies and not unsafe


def _emqx_exact(policy: FleetPolicy) -> bool:
    """EMQX's HTTP authorizer is asked without the client certificate, so a rule naming
    ``${cert.serial}`` matches nothing there: stricter than the engine, never looser."""
    return not _names_serial(policy)


def _mosquitto_model(enforced: Any, device_id: str, action: str, topic: str) -> bool | None:
    access = {"publish": "write", "receive": "read"}[action]
    return MosquittoAcl(enforced.text).allows(device_id, topic, access)


def _emqx_model(enforced: EmqxPolicy, device_id: str, action: str, topic: str) -> bool | None:
    acl = enforced.acls.get(device_id)
    if acl is None or action == "connect":
        return acl is not None
    rules = acl.as_json()
    for rule in rules:
        check_rule(rule)
    return evaluate(rules, action, topic)  # None: handed to the HTTP authorizer (the engine)


@dataclass(frozen=True)
class Broker:
    adapter: BrokerAdapter[Any]
    #: The actions the broker checks itself (the others pass unchecked, see ``decide``).
    checks: frozenset[str]
    read_config: Callable[[str], ConfigFacts]
    #: An independent model of the broker's check: allow, deny, or None (handed on).
    model: Callable[[Any, str, str, str], bool | None]
    exact: Callable[[FleetPolicy], bool]
    #: Unix-socket listeners: Mosquitto's control socket (password-protected, in a
    #: directory only the broker user can enter); EMQX has none.
    local_sockets: tuple[str, ...]
    #: Mosquitto checks the CRL file itself; EMQX without a CRL distribution point in the
    #: device certificates relies on iotsec refusing revoked certificates at authentication.
    crl: str | None


BROKERS = {
    "mosquitto": Broker(
        MosquittoAdapter(LAYOUT, ListenerSettings.parse(port=8883, bind="0.0.0.0")),  # noqa: S104
        frozenset({"publish", "receive"}), mosquitto_facts, _mosquitto_model, _mosquitto_exact,
        (str(LAYOUT.admin_socket),), str(PKI.crl)),
    "emqx": Broker(
        EmqxAdapter("https://iotsec.example.com:8443", TOKEN, bind="0.0.0.0", port=8883),  # noqa: S104
        frozenset({"connect", "publish", "subscribe"}), emqx_facts, _emqx_model, _emqx_exact,
        (), None),
}


@pytest.fixture(scope="module", params=list(BROKERS))
def broker(request: pytest.FixtureRequest) -> Broker:
    return BROKERS[request.param]


# --- the engine's answer -------------------------------------------------------------------


def engine_allows(policy: FleetPolicy, device: FleetDevice, action: str, topic: str) -> bool:
    """What the engine allows a device holding a current certificate. Brokers identify a
    device by its certificate, so ``connect`` needs no allow rule, only no matching deny.
    A message on T reaches a device only through a subscription whose filter matches T, so
    a delivery needs ``receive`` on T and ``subscribe`` to T."""
    engine = CompiledPolicy(policy.roles)
    identity = Identity(device.id, device.groups, device.attributes, cert_cn=device.id,
                        cert_serial=device.serials[0], roles=device.roles)
    connect = engine.decide(identity, "connect", device.id)
    if not device.enabled or (connect.rule is not None and not connect.allowed):
        return False
    if action == "connect":
        return True
    allowed = engine.decide(identity, action, topic).allowed
    if action == "receive":
        allowed = allowed and engine.decide(identity, "subscribe", topic).allowed
    return allowed


# --- the configuration ---------------------------------------------------------------------


def test_config_is_mutual_tls_only_without_anonymous_access(broker: Broker) -> None:
    facts = broker.read_config(broker.adapter.render_config(PKI))
    assert facts.listeners, "no listener for devices"
    for listener in facts.listeners:
        assert listener.tls, f"plaintext listener {listener.where}"
        assert listener.client_certificate_required, listener
        assert listener.ca == str(PKI.ca), listener
        assert (listener.certificate, listener.key) == (str(PKI.certificate), str(PKI.key))
        assert listener.tls_versions and set(listener.tls_versions) <= {"tlsv1.2", "tlsv1.3"}
    assert not facts.anonymous_allowed
    assert facts.identity_from_certificate
    assert facts.unmatched_denied
    assert facts.local_sockets == broker.local_sockets
    assert facts.crl == broker.crl


def test_adapter_declares_what_it_checks(broker: Broker) -> None:
    adapter = broker.adapter
    assert adapter.checks == broker.checks
    assert adapter.checks <= set(MQTT_ACTIONS)
    enforced = adapter.render_policy(FleetPolicy((default_device_role(),), (DEVICE,)))
    for action in MQTT_ACTIONS:
        topic = "devices/d1/#" if action == "subscribe" else "devices/d1/t"
        decision = adapter.decide(enforced, "d1", action, topic)
        assert decision.checked is (action in adapter.checks), (action, decision)
        assert decision.allowed, decision  # the default role allows each of them
        assert decision.by


# --- decisions: a generated policy against the engine -------------------------------------

DEVICE = FleetDevice("d1", True, ("device",), serials=("0A",))
LEVELS = ["devices", "a", "b", "+", "#", "$SYS", "${device.id}", "${device.group}",
          "${device.attr.loc}", "${cert.serial}"]
WORDS = ["devices", "a", "b", "d1", "d2", "g1", "0A", "$SYS"]


@st.composite
def rules(draw: st.DrawFn) -> Rule | None:
    levels = [draw(st.sampled_from(LEVELS)) for _ in range(draw(st.integers(1, 3)))]
    if "#" in levels:
        levels = levels[:levels.index("#") + 1]
    try:
        return Rule.parse(draw(st.sampled_from(["allow", "allow", "deny"])),
                          draw(st.sampled_from(MQTT_ACTIONS)), "/".join(levels))
    except PolicyError:  # a rule the policy refuses (e.g. a variable in a '$' level)
        return None


@st.composite
def policies(draw: st.DrawFn) -> FleetPolicy:
    roles = []
    for name in ("r1", "r2"):
        drawn = [r for r in draw(st.lists(rules(), max_size=4)) if r is not None]
        # A delivery needs receive and subscribe: pair some receive rules with a subscribe.
        paired = [Rule.parse(r.effect.value, "subscribe", r.resource) for r in drawn
                  if r.action == "receive" and draw(st.booleans())]
        roles.append(Role.build(name, drawn + paired))
    devices = tuple(FleetDevice(
        device_id, draw(st.booleans()) or device_id == "d1",
        tuple(draw(st.lists(st.sampled_from(["r1", "r2"]), unique=True, max_size=2))),
        tuple(draw(st.lists(st.sampled_from(["g1", "a"]), unique=True, max_size=2))),
        {"loc": draw(st.sampled_from(["a", "b", "x\ny"]))}, ("0A",))
        for device_id in ("d1", "d2", "a"))
    return FleetPolicy(tuple(roles), devices, draw(st.sampled_from([None, ("r1",)])))


VALUES = {"${device.id}": ["d1", "d2", "a"], "${device.group}": ["g1", "a"],
          "${device.attr.loc}": ["a", "b", "x\ny"], "${cert.serial}": ["0A"]}


@st.composite
def requests(draw: st.DrawFn, policy: FleetPolicy) -> tuple[str, str]:
    """A request, half of them for what one of the policy's rules names (its variables
    and wildcards filled in), so that grants are asked about, not only denials."""
    named = [r for role in policy.roles for r in role.rules]
    rule = draw(st.sampled_from(named)) if named and draw(st.booleans()) else None
    action = rule.action if rule is not None else draw(st.sampled_from(MQTT_ACTIONS))
    subscribe = action == "subscribe"
    words = WORDS + (["+"] if subscribe else [])
    levels: list[str] = []
    if rule is not None:
        for level in rule.resource.split("/"):
            if level in VALUES:
                levels.append(draw(st.sampled_from(VALUES[level])))
            elif level == "#" and not (subscribe and draw(st.booleans())):
                levels += [draw(st.sampled_from(words)) for _ in range(draw(st.integers(0, 2)))]
            elif level == "+" and not (subscribe and draw(st.booleans())):
                levels.append(draw(st.sampled_from(words)))
            else:
                levels.append(level)
    if not levels:
        levels = [draw(st.sampled_from(words)) for _ in range(draw(st.integers(1, 3)))]
        if subscribe and draw(st.booleans()):
            levels.append("#")
    return action, "/".join(levels)


def cases() -> st.SearchStrategy[tuple[FleetPolicy, list[tuple[str, str]]]]:
    return policies().flatmap(lambda policy: st.tuples(
        st.just(policy), st.lists(requests(policy), min_size=1, max_size=8)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_broker_decides_as_the_engine(broker: Broker,
                                      case: tuple[FleetPolicy, list[tuple[str, str]]]) -> None:
    policy, asked = case
    adapter = broker.adapter
    enforced = adapter.render_policy(policy)
    exact = broker.exact(policy)
    for device in policy.devices:
        for action, topic in asked:
            decision = adapter.decide(enforced, device.id, action, topic)
            if action not in broker.checks:
                if decision.checked:  # the device is refused before it can ask (connect)
                    assert not decision.allowed, decision
                    assert not engine_allows(policy, device, "connect", device.id), decision
                else:
                    assert decision.allowed, decision
                continue
            expected = engine_allows(policy, device, action, topic)
            where = (device.id, action, topic, decision, policy)
            assert not decision.allowed or expected, where  # never looser than the engine
            if exact:
                assert decision.allowed is expected, where
            modelled = broker.model(enforced, device.id, action, topic)
            if modelled is None:  # handed on: EMQX asks the engine
                assert decision.by.startswith("HTTP authorizer"), where
            else:
                assert decision.allowed is modelled, where


# --- failing closed ----------------------------------------------------------------------


def _checked_requests(broker: Broker, device: str) -> list[tuple[str, str]]:
    return [(action, topic) for action in sorted(broker.checks)
            for topic in (device, f"devices/{device}/t", "$SYS/x", "a")]


def test_nothing_is_allowed_by_an_empty_policy(broker: Broker) -> None:
    for roles in ((), (Role.build("device", []),)):
        policy = FleetPolicy(roles, (DEVICE,), ("device",) if roles else None)
        enforced = broker.adapter.render_policy(policy)
        for device in ("d1", "stranger"):
            for action, topic in _checked_requests(broker, device):
                if action == "connect" and device == "d1":
                    continue  # a registered device may connect; it may do nothing else
                decision = broker.adapter.decide(enforced, device, action, topic)
                assert not decision.allowed, (device, action, topic, decision)


def test_blocked_devices_are_allowed_nothing(broker: Broker) -> None:
    everything = Role.build("r", [Rule.parse("allow", action, "#") for action in MQTT_ACTIONS]
                            + [Rule.parse("deny", "connect", "${device.group}")])
    devices = (FleetDevice("off", False, ("r",), serials=("0A",)),
               FleetDevice("denied", True, ("r",), groups=("denied",), serials=("0B",)),
               FleetDevice("on", True, ("r",), groups=("fine",), serials=("0C",)))
    enforced = broker.adapter.render_policy(FleetPolicy((everything,), devices))
    for device in ("off", "denied"):
        for action, topic in _checked_requests(broker, device):
            decision = broker.adapter.decide(enforced, device, action, topic)
            assert not decision.allowed, (device, action, topic, decision)
    for action, topic in _checked_requests(broker, "on"):
        if not topic.startswith("$"):
            assert broker.adapter.decide(enforced, "on", action, topic).allowed, (action, topic)


@pytest.mark.parametrize(("action", "topic"), [
    ("admin:read", "a"), ("PUBLISH", "a"), ("publish", "a/#"), ("publish", ""),
    ("receive", "a/+"), ("subscribe", "a/#/b"), ("subscribe", "a\x00"),
])
def test_invalid_requests_raise(broker: Broker, action: str, topic: str) -> None:
    enforced = broker.adapter.render_policy(FleetPolicy((default_device_role(),), (DEVICE,)))
    with pytest.raises(InvalidInputError):
        broker.adapter.decide(enforced, "d1", action, topic)


# --- where a broker is stricter than the engine ------------------------------------------

STRICTER = {
    # Mosquitto's deny lines deny every access: a 'deny receive' also stops publishing.
    "mosquitto": Role.build("r", [Rule.parse("allow", "publish", "devices/#"),
                                  Rule.parse("deny", "receive", "devices/${device.id}/cfg")]),
    # EMQX's HTTP authorizer is asked without the certificate, so '${cert.serial}' matches
    # nothing there; publishes reach it when one rule cannot be put in the ACL (a value EMQX
    # would read as a placeholder).
    "emqx": Role.build("r", [Rule.parse("allow", "publish", "devices/${cert.serial}/cfg"),
                             Rule.parse("allow", "publish", "sites/${device.attr.site}")]),
}
REQUEST = {"mosquitto": ("publish", "devices/d1/cfg"), "emqx": ("publish", "devices/0A/cfg")}


def test_where_a_broker_is_stricter_than_the_engine(broker: Broker) -> None:
    device = FleetDevice("d1", True, ("r",), attributes={"site": "${username}"},
                         serials=("0A",))
    for name, role in STRICTER.items():
        policy = FleetPolicy((role,), (device,))
        action, topic = REQUEST[name]
        assert engine_allows(policy, device, action, topic)
        decision = broker.adapter.decide(broker.adapter.render_policy(policy), "d1", action,
                                         topic)
        if name == broker.adapter.name:
            assert not decision.allowed, decision
            assert not broker.exact(policy)
        else:
            assert decision.allowed, decision
            assert broker.exact(policy)
