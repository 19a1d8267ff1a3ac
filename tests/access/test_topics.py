"""MQTT topic names and filters: syntax, matching, covers and overlaps, each checked
against the specification text and a brute-force reference."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iotsec.access.topics import (
    MAX_TOPIC_BYTES,
    TopicError,
    TopicFilter,
    match_levels,
    parse_topic_name,
)
from iotsec.errors import InvalidInputError
from tests.access.reference import (
    EMPTY_PARENT_COVERS,
    EMPTY_PARENT_OVERLAPS,
    literal_levels,
    ref_covers,
    ref_matches,
    ref_overlaps,
    universe,
)

# --- syntax ------------------------------------------------------------------------------

VALID_NAMES = [
    ("a", ("a",)),
    ("/", ("", "")),
    ("a//b", ("a", "", "b")),
    ("/a", ("", "a")),
    ("a/", ("a", "")),
    ("//", ("", "", "")),
    ("$SYS/broker/load", ("$SYS", "broker", "load")),
    ("sport/tennis/player1", ("sport", "tennis", "player1")),
    ("é/ü/日本語", ("é", "ü", "日本語")),
    ("😀", ("😀",)),
    ("with space/and-dash", ("with space", "and-dash")),
    ("$", ("$",)),
]


@pytest.mark.parametrize(("text", "levels"), VALID_NAMES)
def test_valid_topic_names_split_into_levels(text: str, levels: tuple[str, ...]) -> None:
    assert parse_topic_name(text) == levels
    # Every valid name is also a valid (wildcard-free) filter matching exactly itself.
    f = TopicFilter.parse(text)
    assert f.levels == levels
    assert not f.is_wildcard
    assert f.matches(text)


VALID_FILTERS = [
    "#", "+", "+/+", "/+", "+/", "a/+/#", "a/#", "/#", "$SYS/#", "$SYS/+/load", "+/#",
    "/", "a//b", "/a", "a/+/+/b", "é/+/日本語/#", "sport/tennis/+", "+/+/+/+/#", "$",
    "a/$b/#",
]


@pytest.mark.parametrize("text", VALID_FILTERS)
def test_valid_topic_filters(text: str) -> None:
    f = TopicFilter.parse(text)
    assert f.text == text == str(f)
    assert f.levels == tuple(text.split("/"))
    assert f.is_wildcard == any(level in ("+", "#") for level in text.split("/"))


@pytest.mark.parametrize(("text", "fragment"), [
    ("a/#/b", "'#'"),
    ("#/a", "'#'"),
    ("##", "'#'"),
    ("a/b#", "'#'"),
    ("#a", "'#'"),
    ("a/#/", "'#'"),
    ("+a", "'+'"),
    ("a+", "'+'"),
    ("a/+b/c", "'+'"),
    ("++", "'+'"),
    ("a/b+/#", "'+'"),
])
def test_misplaced_wildcards_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(TopicError) as info:
        TopicFilter.parse(text)
    assert fragment in str(info.value)
    assert text in str(info.value)  # the message names the offending filter
    assert info.value.hint  # and says what to do


@pytest.mark.parametrize("text", ["\x00", "a/\x00", "\x00/b", "a\x00b", "#\x00", "+/\x00"])
def test_nul_is_refused_anywhere(text: str) -> None:
    with pytest.raises(TopicError, match="NUL"):
        TopicFilter.parse(text)
    if "+" not in text and "#" not in text:
        with pytest.raises(TopicError, match="NUL"):
            parse_topic_name(text)


def test_empty_string_is_refused() -> None:
    with pytest.raises(TopicError, match="empty"):
        TopicFilter.parse("")
    with pytest.raises(TopicError, match="empty"):
        parse_topic_name("")


def test_topic_error_is_an_input_error() -> None:
    assert issubclass(TopicError, InvalidInputError)
    assert TopicError.code == "invalid-topic"


@pytest.mark.parametrize(("text", "ok"), [
    ("a" * MAX_TOPIC_BYTES, True),
    ("a" * (MAX_TOPIC_BYTES + 1), False),  # too long by character count
    ("é" * 30_000, True),  # 60,000 bytes
    ("é" * 32_767 + "a", True),  # 65,535 bytes exactly
    ("é" * 32_768, False),  # 65,536 bytes, only 32,768 characters
    ("é" * 33_000, False),  # 66,000 bytes
    ("a" * (MAX_TOPIC_BYTES - 1) + "é", False),  # 65,535 characters, 65,536 bytes
    ("€" * 21_845, True),  # 3-byte characters, 65,535 bytes
    ("€" * 21_845 + "a", False),
    ("😀" * 16_383 + "abc", True),  # 4-byte characters, 65,535 bytes
    ("😀" * 16_384, False),  # 65,536 bytes
    ("a/" * 32_767 + "a", True),  # 32,768 levels, 65,535 bytes
])
def test_length_limit_counts_utf8_bytes(text: str, ok: bool) -> None:
    if ok:
        assert parse_topic_name(text) == tuple(text.split("/"))
        assert TopicFilter.parse(text).matches(text)
        assert TopicFilter.parse(text[:-1] + "#" if text.endswith("/a") else text)
    else:
        with pytest.raises(TopicError, match="longer than 65535 bytes"):
            parse_topic_name(text)
        with pytest.raises(TopicError, match="longer than 65535 bytes"):
            TopicFilter.parse(text)


@pytest.mark.parametrize("text", ["\ud800", "a/\udfff", "\udc00/b", "x\ud83d", "\ud800/#"])
def test_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises(TopicError, match="surrogate"):
        TopicFilter.parse(text)
    if "#" not in text:
        with pytest.raises(TopicError, match="surrogate"):
            parse_topic_name(text)


def test_a_proper_surrogate_pair_character_is_fine() -> None:
    assert parse_topic_name("a/\U0001f600") == ("a", "\U0001f600")


@pytest.mark.parametrize("text", ["+", "#", "a/+", "a/#", "+/b", "a+b", "a#b", "sport/#/x",
                                  "é/+"])
def test_topic_names_refuse_wildcards(text: str) -> None:
    with pytest.raises(TopicError, match="wildcard"):
        parse_topic_name(text)


@pytest.mark.parametrize("bad", [None, 7, b"a/b"])
def test_non_strings_are_refused(bad: object) -> None:
    with pytest.raises(TopicError):
        parse_topic_name(bad)  # type: ignore[arg-type]
    with pytest.raises(TopicError):
        TopicFilter.parse(bad)  # type: ignore[arg-type]


# --- matching: the specification's examples -----------------------------------------------

SPEC_EXAMPLES = [
    # MQTT 3.1.1 section 4.7.1.2, multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/tennis/player1/#", "sport/tennis", False),
    ("sport/#", "sport", True),
    ("sport/#", "sports", False),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("#", "/finance", True),
    # 4.7.1.3, single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/tennis/+", "sport/tennis", False),
    ("sport/tennis/+", "sport/tennis/", True),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    # 4.7.2, topics beginning with $
    ("#", "$SYS/x", False),
    ("#", "$SYS", False),
    ("+", "$SYS", False),
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("a/+", "a/$b", True),  # only the first level is special
    ("a/#", "a/$b/c", True),
    # empty levels are levels
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("a/b", "a//b", False),
    ("/#", "/", True),
    ("+/", "/", True),
]


@pytest.mark.parametrize(("filter_text", "name", "expected"), SPEC_EXAMPLES)
def test_specification_examples(filter_text: str, name: str, expected: bool) -> None:
    f = TopicFilter.parse(filter_text)
    levels = parse_topic_name(name)
    assert f.matches(name) is expected
    assert f.matches(levels) is expected
    assert match_levels(f.levels, levels) is expected
    # The reference agrees with the specification too (so it is not vacuous).
    assert ref_matches(filter_text, name) is expected


# --- matching: brute force ---------------------------------------------------------------

LEVELS = ["", "a", "b", "$x", "é"]

names_st = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=5).map("/".join).filter(bool)


@st.composite
def filters_st(draw: st.DrawFn, max_levels: int = 5, alphabet: tuple[str, ...] = tuple(LEVELS)
               ) -> str:
    levels = draw(st.lists(st.sampled_from([*alphabet, "+"]), min_size=1, max_size=max_levels))
    if draw(st.booleans()):
        if draw(st.booleans()) or len(levels) == 1:
            levels[-1] = "#"
        elif len(levels) < max_levels:
            levels.append("#")
    text = "/".join(levels)
    assume(text != "")
    return text


@settings(max_examples=600, deadline=None)
@given(filter_text=filters_st(), name=names_st)
def test_matches_agrees_with_reference(filter_text: str, name: str) -> None:
    f = TopicFilter.parse(filter_text)
    expected = ref_matches(filter_text, name)
    assert f.matches(name) is expected
    assert f.matches(parse_topic_name(name)) is expected


SMALL_LEVELS = ("", "a", "$x")


def _small_filters(max_levels: int = 3) -> list[str]:
    result = []
    for depth in range(1, max_levels + 1):
        for combo in itertools.product([*SMALL_LEVELS, "+"], repeat=depth):
            result.append("/".join(combo))
        for combo in itertools.product([*SMALL_LEVELS, "+"], repeat=depth - 1):
            result.append("/".join([*combo, "#"]))
    return [f for f in result if f]


SMALL_FILTERS = _small_filters()
SMALL_UNIVERSE = universe([*SMALL_LEVELS, "z"], 5)


def test_matches_exhaustively_on_a_small_alphabet() -> None:
    mismatches = [(f, t) for f in SMALL_FILTERS for t in SMALL_UNIVERSE
                  if TopicFilter.parse(f).matches(t) != ref_matches(f, t)]
    assert mismatches == []


# --- covers and overlaps -----------------------------------------------------------------



def test_reference_universe_is_large_enough_for_classic_cases() -> None:
    assert ref_covers("a/#", "a")
    assert not ref_covers("a/+", "a/#")  # 'a' and 'a/z/z' separate them
    assert not ref_covers("#", "$x/#")
    assert ref_covers("+/#", "#")
    assert ref_overlaps("a/#", "+")
    assert not ref_overlaps("+", "$x")
    assert not ref_overlaps("a/+", "a")


def test_covers_and_overlaps_exhaustively_on_a_small_alphabet() -> None:
    index = {t: i for i, t in enumerate(SMALL_UNIVERSE)}
    matched = {f: frozenset(index[t] for t in SMALL_UNIVERSE if ref_matches(f, t))
               for f in SMALL_FILTERS}
    parsed = {f: TopicFilter.parse(f) for f in SMALL_FILTERS}
    bad_covers, bad_overlaps = [], []
    for f, g in itertools.product(SMALL_FILTERS, repeat=2):
        if parsed[f].covers(parsed[g]) != (matched[g] <= matched[f]):
            bad_covers.append((f, g))
        if parsed[f].overlaps(parsed[g]) != bool(matched[f] & matched[g]):
            bad_overlaps.append((f, g))
    assert bad_covers == []
    assert bad_overlaps == []


@settings(max_examples=300, deadline=None)
@given(f=filters_st(max_levels=4), g=filters_st(max_levels=4))
def test_covers_agrees_with_reference(f: str, g: str) -> None:
    assert "z" not in literal_levels(f, g)
    assert TopicFilter.parse(f).covers(TopicFilter.parse(g)) is ref_covers(f, g)


@settings(max_examples=300, deadline=None)
@given(f=filters_st(max_levels=4), g=filters_st(max_levels=4))
def test_overlaps_agrees_with_reference(f: str, g: str) -> None:
    expected = ref_overlaps(f, g)
    assert TopicFilter.parse(f).overlaps(TopicFilter.parse(g)) is expected
    assert TopicFilter.parse(g).overlaps(TopicFilter.parse(f)) is expected


@settings(max_examples=200, deadline=None)
@given(f=filters_st(max_levels=4), g=filters_st(max_levels=4), name=names_st)
def test_covers_and_overlaps_are_consistent_with_matches(f: str, g: str, name: str) -> None:
    tf, tg = TopicFilter.parse(f), TopicFilter.parse(g)
    if tf.covers(tg) and tg.matches(name):
        assert tf.matches(name)
    if tf.matches(name) and tg.matches(name):
        assert tf.overlaps(tg)
    assert tf.covers(tf)


@pytest.mark.parametrize(("f", "g", "covers", "overlaps"), [
    ("#", "a/b", True, True),
    ("#", "+/#", True, True),
    ("#", "$SYS/#", False, False),
    ("$SYS/#", "$SYS/+", True, True),
    ("a/#", "a", True, True),
    ("a", "a/#", False, True),
    ("a/+", "a/#", False, True),
    ("a/+/#", "a/#", False, True),
    ("a/#", "a/+/#", True, True),
    ("+/+", "a/b", True, True),
    ("a/b", "+/+", False, True),
    ("+", "/", False, False),
    ("+/+", "/", True, True),
    ("devices/d1/#", "devices/#", False, True),
    ("devices/d1/#", "devices/+/telemetry", False, True),
    ("devices/d1/#", "devices/d2/#", False, False),
    ("a/+", "b/+", False, False),
    ("a/+", "a", False, False),
])
def test_covers_and_overlaps_examples(f: str, g: str, covers: bool, overlaps: bool) -> None:
    assert TopicFilter.parse(f).covers(TopicFilter.parse(g)) is covers
    assert TopicFilter.parse(f).overlaps(TopicFilter.parse(g)) is overlaps
    assert ref_covers(f, g) is covers
    assert ref_overlaps(f, g) is overlaps


@pytest.mark.parametrize(("f", "g"), sorted(EMPTY_PARENT_COVERS))
def test_covers_ignores_the_empty_parent_topic(f: str, g: str) -> None:
    # '+/#' and '#' match the same topic names (all not starting with '$'); '/+/#' and
    # '+/+/#' match every name of two or more levels whose first level is empty, which is
    # every name '/#' matches.
    assert ref_covers(f, g)
    assert TopicFilter.parse(f).covers(TopicFilter.parse(g))


@pytest.mark.parametrize(("f", "g"), sorted(EMPTY_PARENT_OVERLAPS))
def test_overlaps_ignores_the_empty_parent_topic(f: str, g: str) -> None:
    # '+' matches one-level names; '/#' matches names of two or more levels.
    assert not ref_overlaps(f, g)
    assert not TopicFilter.parse(f).overlaps(TopicFilter.parse(g))
