"""A reference model of how Mosquitto 2.0.11's ``acl_file`` decides, for property tests.

Measured against the real broker (tests/broker/test_integration.py and the module
docstring of iotsec.broker.acl): a client's own user block is checked first, its deny
lines before its grants; then the pattern lines (``%u``/``%c`` replaced by the username,
which is also the client id here), deny lines first; no match means denied. Topic matching
is MQTT's, and a filter whose first level is a wildcard does not match a ``$`` topic.
"""

from __future__ import annotations

from iotsec.access.topics import match_levels


class MosquittoAcl:
    def __init__(self, text: str) -> None:
        self.users: dict[str, list[tuple[str, str]]] = {}
        self.patterns: list[tuple[str, str]] = []
        user: str | None = None
        for line in text.split("\n"):
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            if keyword == "user":
                user = rest
                self.users.setdefault(user, [])
                continue
            access, _, topic = rest.partition(" ")
            if keyword == "pattern":
                self.patterns.append((access, topic))
            else:
                assert user is not None, "topic line before any user line"
                self.users[user].append((access, topic))

    @staticmethod
    def _check(entries: list[tuple[str, str]], topic: str, access: str) -> bool | None:
        names = tuple(topic.split("/"))
        for kind, acl_topic in entries:
            if kind == "deny" and _matches(acl_topic, names):
                return False
        for kind, acl_topic in entries:
            if kind != "deny" and access in kind and _matches(acl_topic, names):
                return True
        return None

    def allows(self, username: str, topic: str, access: str) -> bool:
        """``access`` is "read" or "write"."""
        own = self._check(self.users.get(username, []), topic, access)
        if own is not None:
            return own
        if any(c in username for c in "+#"):
            return False
        substituted = [(k, "/".join(username if level in ("%u", "%c") else level
                                    for level in t.split("/"))) for k, t in self.patterns]
        return bool(self._check(substituted, topic, access))


def _matches(acl_topic: str, names: tuple[str, ...]) -> bool:
    levels = tuple(acl_topic.split("/"))
    if names and names[0].startswith("$") and not levels[0].startswith("$"):
        return False
    return match_levels(levels, names)
