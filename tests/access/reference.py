"""Brute-force reference semantics for MQTT topic filters, written from the MQTT 3.1.1 /
MQTT 5 text (section 4.7) and independent of ``iotsec.access``.

A filter is translated into a regular expression over the whole topic string:

- ``+`` fills exactly one level: ``[^/]*``;
- a trailing ``/#`` matches the parent and any number of child levels: ``(?:/.*)?``;
- a lone ``#`` matches every topic;
- a filter whose first level is ``+`` or ``#`` never matches a topic starting with ``$``.

``covers`` and ``overlaps`` are decided by enumerating a finite universe of topic names.
For this filter language the universe built from the literal levels of the filters
involved, plus one fresh level that is neither one of them nor ``$``-leading, with depths
up to the longest filter + 2, is sufficient: a topic that separates two filters can be
rewritten level by level into one of the universe (a level under ``+``/``#`` that is not
one of the filters' literals behaves exactly like the fresh level, and beyond the longest
filter only "one level more" is distinguishable from "many levels more").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from functools import lru_cache

FRESH = "z"


def _level_regex(level: str) -> str:
    return "[^/]*" if level == "+" else re.escape(level)


@lru_cache(maxsize=4096)
def filter_regex(filter_text: str) -> re.Pattern[str]:
    if filter_text == "#":
        body = ".*"
    elif filter_text.endswith("/#"):
        body = "/".join(map(_level_regex, filter_text[:-2].split("/"))) + "(?:/.*)?"
    else:
        body = "/".join(map(_level_regex, filter_text.split("/")))
    return re.compile(body, re.DOTALL)


def first_level_is_wildcard(filter_text: str) -> bool:
    return filter_text.split("/", 1)[0] in ("+", "#")


def ref_matches(filter_text: str, name: str) -> bool:
    """Does the filter match the topic name, per the specification text?"""
    if name.startswith("$") and first_level_is_wildcard(filter_text):
        return False
    return filter_regex(filter_text).fullmatch(name) is not None


def literal_levels(*filters: str) -> set[str]:
    return {level for f in filters for level in f.split("/") if level not in ("+", "#")}


def universe(levels: Iterable[str], depth: int) -> list[str]:
    """Every topic name of 1..depth levels over ``levels`` (the empty name excluded)."""
    alphabet = sorted(set(levels))
    names = []
    for d in range(1, depth + 1):
        for combo in itertools.product(alphabet, repeat=d):
            name = "/".join(combo)
            if name:
                names.append(name)
    return names


def pair_universe(f: str, g: str) -> list[str]:
    assert FRESH not in literal_levels(f, g)
    depth = max(len(f.split("/")), len(g.split("/"))) + 2
    return universe(literal_levels(f, g) | {FRESH}, depth)


def ref_covers(f: str, g: str) -> bool:
    """Every topic ``g`` matches is matched by ``f`` (over the sufficient universe)."""
    return all(ref_matches(f, t) for t in pair_universe(f, g) if ref_matches(g, t))


def ref_overlaps(f: str, g: str) -> bool:
    """Some topic is matched by both ``f`` and ``g`` (over the sufficient universe)."""
    return any(ref_matches(f, t) and ref_matches(g, t) for t in pair_universe(f, g))


# Pairs (F, G) where F covers G only because the empty "parent" topic that '#' in G would
# match is not a topic name (G must be '#' or '/#', and F must then match every deeper
# topic). Kept as regression cases for that edge of ``TopicFilter.covers``.
EMPTY_PARENT_COVERS = frozenset({("+/#", "#"), ("/+/#", "/#"), ("+/+/#", "/#")})
# Likewise these pairs do not overlap: the only topic both would match is the empty
# "parent" of '/#', which is not a topic name.
EMPTY_PARENT_OVERLAPS = frozenset({("+", "/#"), ("/#", "+")})
