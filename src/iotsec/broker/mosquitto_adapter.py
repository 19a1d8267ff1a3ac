"""Mosquitto 2.0 as a :class:`~iotsec.broker.adapter.BrokerAdapter` (pure).

The configuration is :func:`~iotsec.broker.mosquitto.render_conf`; what the broker
enforces is the ``acl_file`` of :func:`~iotsec.broker.acl.compile_acl`. A decision reads
that ACL back the way Mosquitto 2.0.11 checks it (measured against the real broker in
``tests/broker``): the client's own ``user`` block first, its ``deny`` lines before its
grants; then the ``pattern`` lines with ``%u`` replaced by the username (the certificate's
CN), ``deny`` lines first; a request no line matches is denied. A filter whose first level
is a wildcard does not match a ``$`` topic.

Mosquitto checks a PUBLISH (``write``) and each delivery (``read``, against the message's
topic name). It never checks a SUBSCRIBE, and cannot refuse a valid certificate at
CONNECT: a blocked device connects and is denied every topic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from iotsec.access.topics import TopicFilter, match_levels, parse_topic_name
from iotsec.broker.acl import CompiledAcl, compile_acl
from iotsec.broker.adapter import BrokerDecision, FleetPolicy, PkiFiles, check_mqtt_action
from iotsec.broker.mosquitto import Layout, ListenerSettings, acl_lines, render_conf

__all__ = ["AclFile", "MosquittoAdapter"]


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    keyword: str
    access: str
    topic: str

    def levels(self, username: str | None) -> tuple[str, ...]:
        """The filter's levels, with ``%u`` replaced in a pattern line."""
        if username is None:
            return tuple(self.topic.split("/"))
        text = "/".join(username if level == "%u" else level
                        for level in self.topic.split("/"))
        return tuple(text.split("/"))


def _first(lines: tuple[_Line, ...], names: tuple[str, ...], access: str,
           username: str | None) -> _Line | None:
    """The line that decides: any matching ``deny`` (it denies every access), else the
    first grant of ``access``."""
    for line in lines:
        if line.access == "deny" and match_levels(line.levels(username), names):
            return line
    for line in lines:
        if (line.access != "deny" and access in line.access
                and match_levels(line.levels(username), names)):
            return line
    return None


class AclFile:
    """A rendered ``acl_file``, read with :func:`~iotsec.broker.mosquitto.acl_lines` (which
    refuses anything Mosquitto would read differently than written)."""

    def __init__(self, text: str) -> None:
        users: dict[str, list[_Line]] = {}
        patterns: list[_Line] = []
        block: list[_Line] = []
        for number, keyword, access, value in acl_lines(text):
            if keyword == "user":
                block = users.setdefault(value, [])
            elif access is not None:
                (patterns if keyword == "pattern" else block).append(
                    _Line(number, keyword, access, value))
        self._users = {user: tuple(lines) for user, lines in users.items()}
        self._patterns = tuple(patterns)

    def decide(self, username: str, access: str, topic: str) -> BrokerDecision:
        """How Mosquitto decides ``access`` (``read``: a delivery, ``write``: a publish) on
        the topic name ``topic`` for ``username``."""
        names = parse_topic_name(topic)
        line = _first(self._users.get(username, ()), names, access, None)
        # Mosquitto substitutes no username holding a wildcard into a pattern.
        if line is None and "+" not in username and "#" not in username:
            line = _first(self._patterns, names, access, username)
        if line is None:
            return BrokerDecision(False, "no ACL line matches (Mosquitto denies)")
        where = f" in the block of user {username!r}" if line.keyword == "topic" else ""
        return BrokerDecision(line.access != "deny", f"ACL line {line.number}: "
                              f"{line.keyword} {line.access} {line.topic}{where}")


@functools.lru_cache(maxsize=4)
def _read(text: str) -> AclFile:
    return AclFile(text)


class MosquittoAdapter:
    """Mosquitto 2.0: the ``mosquitto.conf`` of ``layout`` and ``listener``, and the
    ``acl_file`` compiled from the policy (``header`` becomes its leading comment)."""

    name = "mosquitto"
    checks = frozenset({"publish", "receive"})

    def __init__(self, layout: Layout, listener: ListenerSettings, *,
                 user: str | None = None, header: str = "") -> None:
        self.layout = layout
        self.listener = listener
        self.user = user
        self.header = header

    def __repr__(self) -> str:
        return f"MosquittoAdapter({str(self.layout.root)!r}, port={self.listener.port})"

    def render_config(self, pki: PkiFiles) -> str:
        """``mosquitto.conf``; the broker reads the ACL and the password file from the
        directory of the PKI files too (a generation, normally ``DIR/current``)."""
        return render_conf(self.layout, self.listener, files=Path(pki.directory),
                           user=self.user)

    def render_policy(self, policy: FleetPolicy) -> CompiledAcl:
        return compile_acl(policy.roles, policy.devices, new_device_roles=policy.new_device_roles,
                           header=self.header)

    def decide(self, enforced: CompiledAcl, device_id: str, action: str,
               topic: str) -> BrokerDecision:
        action = check_mqtt_action(action)
        if action == "subscribe":
            TopicFilter.parse(topic)
            return BrokerDecision(True, "Mosquitto 2.0 does not check SUBSCRIBE; each message "
                                  "delivered is checked (receive)", checked=False)
        if action == "connect":
            return BrokerDecision(True, "Mosquitto admits every valid, unrevoked client "
                                  "certificate; a blocked device is denied every topic",
                                  checked=False)
        return _read(enforced.text).decide(device_id, "write" if action == "publish" else "read",
                                           topic)
