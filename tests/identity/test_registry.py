"""The registry's pure model: device ids, group names, attributes and lifecycle states."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iotsec.errors import (
    ConflictError,
    DeviceStateError,
    InvalidDeviceIdError,
    InvalidInputError,
)
from iotsec.identity.registry import (
    MAX_ATTRIBUTE_VALUE,
    MAX_ATTRIBUTES,
    DeviceState,
    parse_attributes,
    parse_device_id,
    parse_group_name,
)

ID_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

# --- device ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "7",
        "Z" * 128,
        "a" + "-" * 127,
        "sensor-01",
        "dev.1_b:c-d",
        "00:1A:2B:3C:4D:5E",
        "urn.like:thing_2",
        "9.9.9",
    ],
)
def test_device_id_accepts(text: str) -> None:
    assert parse_device_id(text) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("a/b", "not allowed"),
        ("/a", "not allowed"),
        ("a b", "not allowed"),
        (" a", "not allowed"),
        ("a\n", "not allowed"),
        ("a\t", "not allowed"),
        ("-a", "not allowed"),
        (".a", "not allowed"),
        ("_a", "not allowed"),
        (":a", "not allowed"),
        ("a+b", "not allowed"),
        ("a#b", "not allowed"),
        ("+", "not allowed"),
        ("#", "not allowed"),
        ("a\x00", "not allowed"),
        ("caf\u00e9", "not allowed"),
        ("\u0661\u0662", "not allowed"),  # non-ASCII digits
        ("\uff41", "not allowed"),  # fullwidth a
        ("a" * 129, "129 characters; at most 128"),
        ("a" * 300, "300 characters; at most 128"),
    ],
)
def test_device_id_refuses(text: str, problem: str) -> None:
    with pytest.raises(InvalidDeviceIdError) as info:
        parse_device_id(text)
    message = str(info.value)
    assert problem in message
    assert info.value.hint
    # Long input is shortened, never echoed whole.
    assert len(message) < 120


def test_device_id_refuses_non_strings() -> None:
    for value in (None, 5, b"abc"):
        with pytest.raises(InvalidDeviceIdError):
            parse_device_id(value)  # type: ignore[arg-type]


def test_invalid_device_id_is_invalid_input() -> None:
    # The API maps InvalidInputError to 4xx; an invalid id must be one.
    with pytest.raises(InvalidInputError):
        parse_device_id("a/b")


@settings(max_examples=500, deadline=None)
@given(
    st.text(max_size=140)
    | st.text(alphabet="abcXYZ019._:-/+# ", min_size=1, max_size=135)
    | st.from_regex(ID_RULE, fullmatch=True)
)
@example("a" * 128)
@example("a" * 129)
@example("a\n")
def test_device_id_property(text: str) -> None:
    if ID_RULE.fullmatch(text):
        assert parse_device_id(text) == text
    else:
        with pytest.raises(InvalidDeviceIdError):
            parse_device_id(text)


@pytest.mark.parametrize("text", ["group-a", "G", "fleet:eu.west_1"])
def test_group_name_accepts(text: str) -> None:
    assert parse_group_name(text) == text


@pytest.mark.parametrize("text", ["", "a/b", "a b", "-a", "a" * 129, "\u00e9"])
def test_group_name_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError, match="group name"):
        parse_group_name(text)


# --- attributes ------------------------------------------------------------------------


def test_attributes_from_pairs_and_mappings() -> None:
    assert parse_attributes(["site=berlin", "floor=2", "note=a=b", "empty="]) == {
        "site": "berlin",
        "floor": "2",
        "note": "a=b",
        "empty": "",
    }
    assert parse_attributes({"site": "berlin", "_x.y-z": "1"}) == {"site": "berlin",
                                                                   "_x.y-z": "1"}
    assert parse_attributes([]) == {}
    assert parse_attributes({}) == {}
    # A later duplicate wins (like repeated --attr flags).
    assert parse_attributes(["a=1", "a=2"]) == {"a": "2"}


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        (["site"], "not of the form key=value"),
        (["ok=1", "nope"], "not of the form key=value"),
        (["=value"], "attribute name"),
        (["1site=x"], "attribute name"),
        (["si te=x"], "attribute name"),
        (["site/x=1"], "attribute name"),
        (["k" * 65 + "=v"], "attribute name"),
        ({"": "x"}, "attribute name"),
        ({"bad key": "x"}, "attribute name"),
        ({"k": 5}, "must be a string"),
        ({"k": None}, "must be a string"),
        (["k=" + "v" * (MAX_ATTRIBUTE_VALUE + 1)], "at most 1024 characters"),
        ([f"k{i}=v" for i in range(MAX_ATTRIBUTES + 1)], "at most 64 attributes"),
        ({f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}, "at most 64 attributes"),
    ],
)
def test_attributes_refused(pairs: object, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        parse_attributes(pairs)  # type: ignore[arg-type]


def test_attribute_limits_are_inclusive() -> None:
    assert len(parse_attributes([f"k{i}=v" for i in range(MAX_ATTRIBUTES)])) == MAX_ATTRIBUTES
    assert parse_attributes({"k" * 64: "v" * MAX_ATTRIBUTE_VALUE})["k" * 64] == "v" * 1024


# --- lifecycle -------------------------------------------------------------------------

P, A, D, R = DeviceState.PENDING, DeviceState.ACTIVE, DeviceState.DISABLED, DeviceState.RETIRED
W, Q = DeviceState.AWAITING_APPROVAL, DeviceState.QUARANTINED
ALLOWED = {(P, A), (P, D), (P, R), (A, D), (A, R), (D, A), (D, R), (W, P), (W, D), (W, R),
           (P, Q), (A, Q), (Q, D), (Q, R)}


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in DeviceState for t in DeviceState],
    ids=lambda s: s.value,
)
def test_transitions(source: DeviceState, target: DeviceState) -> None:
    if (source, target) in ALLOWED:
        source.check_transition(target, "dev-1")
        return
    with pytest.raises(DeviceStateError) as info:
        source.check_transition(target, "dev-1")
    message = str(info.value)
    assert "'dev-1'" in message
    assert source.value in message
    assert target.value in message
    assert isinstance(info.value, ConflictError)
    assert info.value.status == 409
    if source is R:
        assert "final" in info.value.hint


def test_retired_is_final() -> None:
    for target in DeviceState:
        with pytest.raises(DeviceStateError):
            R.check_transition(target, "d")


def test_which_states_hold_certificates() -> None:
    assert {s for s in DeviceState if s.may_hold_certificates} == {P, A}


def test_state_values() -> None:
    assert [s.value for s in DeviceState] == ["pending", "active", "disabled", "retired",
                                              "awaiting-approval", "quarantined"]
    assert [s for s in DeviceState if s.may_hold_certificates] == [P, A]
    assert DeviceState("retired") is R
