"""MQTT topic names and topic filters, exactly as MQTT 3.1.1 section 4.7 and MQTT 5
section 4.7 define them.

- Names and filters are 1 to 65,535 bytes of UTF-8 with no U+0000.
- ``/`` separates levels; empty levels are legal (``a//b``, ``/a``).
- ``+`` matches exactly one level and must fill its level; ``#`` matches any number of
  levels, including the parent (``a/#`` matches ``a``), and must be the last level.
- A topic name (what is published) carries no wildcard.
- Topics that start with ``$`` are not matched by a filter whose first level is a wildcard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from iotsec.errors import InvalidInputError

__all__ = [
    "MAX_TOPIC_BYTES", "Level", "TopicError", "TopicFilter", "covers_levels", "match_levels",
    "overlaps_levels", "parse_topic_name"
]

MAX_TOPIC_BYTES = 65_535
_HINT = ("a topic filter is '/'-separated levels; '+' fills a whole level, '#' only as "
         "the last level (e.g. devices/+/telemetry or devices/d1/#)")


class TopicError(InvalidInputError):
    code = "invalid-topic"
    default_hint = _HINT


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str) or text == "":
        raise TopicError(f"the {what} is empty")
    if len(text) > MAX_TOPIC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise TopicError(f"the {what} is longer than {MAX_TOPIC_BYTES} bytes")
    if "\x00" in text:
        raise TopicError(f"the {what} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise TopicError(f"the {what} is not valid UTF-8 (lone surrogate)") from None


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


def parse_topic_name(text: str) -> tuple[str, ...]:
    """Validate a topic name (no wildcards) and return its levels."""
    if not (isinstance(text, str) and text and text.isascii() and len(text) <= MAX_TOPIC_BYTES
            and "\x00" not in text):
        _check_text(text, "topic name")
    if "+" in text or "#" in text:
        raise TopicError(f"topic name {_show(text)} contains a wildcard",
                         hint="a published topic names one topic; wildcards belong in filters")
    return tuple(text.split("/"))


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A validated MQTT topic filter."""

    text: str
    levels: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TopicFilter:
        _check_text(text, "topic filter")
        levels = tuple(text.split("/"))
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != last):
                raise TopicError(f"topic filter {_show(text)}: '#' must be a whole level and "
                                 "the last one")
            if "+" in level and level != "+":
                raise TopicError(f"topic filter {_show(text)}: '+' must fill a whole level")
        return cls(text=text, levels=levels)

    @property
    def is_wildcard(self) -> bool:
        return any(level in ("+", "#") for level in self.levels)

    def matches(self, topic: str | tuple[str, ...]) -> bool:
        """Does this filter match the topic name (a string or its levels)?"""
        names = tuple(topic.split("/")) if isinstance(topic, str) else topic
        return match_levels(self.levels, names)

    def covers(self, other: TopicFilter) -> bool:
        """True if every topic that ``other`` matches is matched by this filter."""
        return covers_levels(self.levels, other.levels)

    def overlaps(self, other: TopicFilter) -> bool:
        """True if some topic is matched by both filters."""
        return overlaps_levels(self.levels, other.levels)

    def __str__(self) -> str:
        return self.text


def match_levels(filter_levels: tuple[str, ...], names: tuple[str, ...]) -> bool:
    """The MQTT matching rule over pre-split levels: a topic name is one filter that has no
    wildcard, and a filter matches it exactly when it covers it."""
    return covers_levels(filter_levels, names)


# A level is '+', '#', a literal, or (for a policy variable already resolved for one
# identity) a frozenset of the literal values it may take.
Level = str | frozenset[str]


def _is_wild(level: Level) -> bool:
    return level == "+" or level == "#"


def _dollar(level: Level) -> bool:
    """Can this first level only be a '$' level (so no leading wildcard reaches it)?"""
    if isinstance(level, frozenset):
        return bool(level) and all(v.startswith("$") for v in level)
    return not _is_wild(level) and level.startswith("$")


def covers_levels(mine: Sequence[Level], theirs: Sequence[str]) -> bool:
    """Every topic that ``theirs`` matches is matched by ``mine``.

    ``mine`` may hold value sets (resolved variables); ``theirs`` is a plain filter.
    """
    if _is_wild(mine[0]) and _dollar(theirs[0]):
        return False
    n = len(theirs)
    for i, level in enumerate(mine):
        if level == "#":
            return True
        if i >= n:
            return False
        theirs_level = theirs[i]
        if theirs_level == "#":
            # `theirs` matches its parent and every depth below. Only '#' covers that,
            # except where the parent is the empty topic name, which is not a topic:
            # then '+/#' covers it as well.
            parent_empty = i == 0 or (i == 1 and theirs[0] == "")
            return parent_empty and level == "+" and tuple(mine[i + 1:]) == ("#",)
        if level == "+":
            continue
        if theirs_level == "+":
            return False  # a literal (or a finite set) never covers a whole level
        if isinstance(level, str):
            if level != theirs_level:
                return False
        elif theirs_level not in level:
            return False
    return n == len(mine)


def _share(x: Level, y: Level) -> bool:
    """Can two non-wildcard levels take the same value?"""
    if isinstance(x, str):
        return x == y if isinstance(y, str) else x in y
    return y in x if isinstance(y, str) else bool(x & y)


def overlaps_levels(a: Sequence[Level], b: Sequence[Level]) -> bool:
    """Some topic is matched by both filters (either may hold non-empty value sets)."""
    if (_is_wild(a[0]) and _dollar(b[0])) or (_is_wild(b[0]) and _dollar(a[0])):
        return False
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            # One side ends here while the other goes on with '#': they share the shorter
            # side's topics, unless the only one is the empty name (not a topic).
            ends = x is None or y is None
            return not (ends and i == 1 and (a[0] == "" or b[0] == ""))
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and not _share(x, y):
            return False
    return True
