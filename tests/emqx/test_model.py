"""The EMQX matching model against the cases EMQX's own topic tests state."""

from __future__ import annotations

import pytest

from tests.emqx.emqx_model import emqx_match, evaluate


@pytest.mark.parametrize(("name", "flt", "expected"), [
    ("a/b/c", "a/b/c", True), ("a/b/c", "a/+/c", True), ("a/b/c", "a/#", True),
    ("a", "a/#", True), ("a/b", "a/+", True), ("a/b/c", "a/+", False),
    ("$SYS/x", "#", False), ("$SYS/x", "+/x", False), ("$SYS/x", "$SYS/#", True),
    # A requested filter is matched as a name: its wildcards are plain words.
    ("a/+", "a/b", False), ("a/+", "a/+", True), ("a/#", "a/+", True),
    ("a/#", "a/+/#", True), ("#", "a/#", False), ("a/+/c", "a/#", True),
])
def test_emqx_topic_match(name: str, flt: str, expected: bool) -> None:
    assert emqx_match(name, flt) is expected


def test_first_match_wins_and_no_match_passes_through() -> None:
    acl = [{"permission": "deny", "action": "publish", "topic": "t/2"},
           {"permission": "allow", "action": "all", "topic": "t/#"},
           {"permission": "allow", "action": "subscribe", "topic": "eq x/#"}]
    assert evaluate(acl, "publish", "t/2") is False
    assert evaluate(acl, "subscribe", "t/2") is True
    assert evaluate(acl, "subscribe", "x/#") is True
    assert evaluate(acl, "subscribe", "x/y") is None
