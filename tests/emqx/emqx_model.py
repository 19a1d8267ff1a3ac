"""A model of how EMQX 5 evaluates the ACL returned with an authentication, written from
its source (``emqx_topic:match/2``, ``emqx_authz_rule_raw``, ``emqx_authz_client_info``):

- rules are checked in order; the first whose action and topic match decides; no match
  passes the request on to the authorizers (``None`` here);
- ``match(Name, Filter)``: a name starting with ``$`` never matches a filter starting with
  ``+`` or ``#``; otherwise level by level, a level equal to the filter's, or any level
  under ``+``; ``#`` as the filter's last level matches the rest (including nothing).
  For a subscription the requested *filter* is passed as the name, so its ``+``/``#``
  levels are just words;
- ``eq T`` matches only T itself.
"""

from __future__ import annotations

from typing import Any

_ACTIONS = {"publish": "publish", "pub": "publish", "subscribe": "subscribe",
            "sub": "subscribe", "all": "all"}


def emqx_match(name: str, flt: str) -> bool:
    if name[:1] == "$" and flt[:1] in ("+", "#"):
        return False
    return _words(name.split("/"), flt.split("/"))


def _words(name: list[str], flt: list[str]) -> bool:
    if not name and not flt:
        return True
    if name and flt and name[0] == flt[0]:
        return _words(name[1:], flt[1:])
    if name and flt and flt[0] == "+":
        return _words(name[1:], flt[1:])
    return flt == ["#"]


def _topics(rule: dict[str, Any]) -> list[str]:
    if "topic" in rule:
        assert isinstance(rule["topic"], str)
        return [rule["topic"]]
    assert isinstance(rule["topics"], list) and rule["topics"]
    return list(rule["topics"])


def check_rule(rule: dict[str, Any]) -> None:
    """What ``emqx_authz_rule_raw:parse_rule/1`` accepts (and what iotsec must send)."""
    assert rule["permission"] in ("allow", "deny"), rule
    assert rule["action"] in _ACTIONS, rule
    topics = _topics(rule)
    assert all(isinstance(t, str) and t for t in topics), rule
    assert set(rule) <= {"permission", "action", "topic", "topics", "qos", "retain"}, rule


def evaluate(acl: list[dict[str, Any]], action: str, topic: str) -> bool | None:
    """allow (True), deny (False) or no match (None, on to the authorizers)."""
    for rule in acl:
        check_rule(rule)
        kind = _ACTIONS[rule["action"]]
        if kind != "all" and kind != action:
            continue
        for t in _topics(rule):
            hit = topic == t[3:] if t.startswith("eq ") else emqx_match(topic, t)
            if hit:
                return rule["permission"] == "allow"
    return None
