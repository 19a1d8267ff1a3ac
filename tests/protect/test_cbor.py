"""The strict CBOR codec: exact encodings, every refusal, and a differential check against
cbor2 (an independent implementation)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.errors import CborError, IotsecError
from iotsec.protect import cbor


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"),
    (65536, "1a00010000"), (2**32, "1b0000000100000000"), (2**64 - 1, "1bffffffffffffffff"),
    (-1, "20"), (-24, "37"), (-25, "3818"), (-65537, "3a00010000"),
    (-(2**64), "3bffffffffffffffff"),
    (b"", "40"), (b"\x01\x02", "420102"), ("", "60"), ("a", "6161"), ("ü", "62c3bc"),
    ([], "80"), ([1, [2]], "82018102"), ({}, "a0"), ({1: 3, -1: b"x"}, "a20103204178"),
    (None, "f6"), (True, "f5"), (False, "f4"), (cbor.Tag(16, [1]), "d08101"),
])
def test_encodings_are_the_rfc_8949_preferred_ones(value: Any, encoded: str) -> None:
    assert cbor.dumps(value).hex() == encoded
    assert cbor.dumps(value) == cbor2.dumps(value if not isinstance(value, cbor.Tag)
                                            else cbor2.CBORTag(value.tag, value.value))
    tags = (16,) if isinstance(value, cbor.Tag) else ()
    assert cbor.loads(bytes.fromhex(encoded), tags=tags) == value


@pytest.mark.parametrize(("data", "reason"), [
    ("", "ends"),
    ("1817", "shortest"),  # 23 in two bytes
    ("1900ff", "shortest"),
    ("1a0000ffff", "shortest"),
    ("1b00000000ffffffff", "shortest"),
    ("5801", "shortest"),  # a 1-byte string with a 2-byte length
    ("5f41004100ff", "indefinite"),
    ("9f01ff", "indefinite"),
    ("1c", "reserved"),
    ("f93c00", "float"),
    ("fb3ff0000000000000", "float"),
    ("f7", "simple"),  # undefined
    ("f0", "simple"),
    ("a201020103", "duplicate"),
    ("a1f601", "keys"),  # null as a map key
    ("a1410001", "keys"),  # bytes as a map key
    ("c101", "tag"),  # tag 1 (epoch time) is not allowed
    ("0000", "follow"),  # trailing byte
    ("42ff", "longer"),  # string longer than the data
    ("62c328", "UTF-8"),
    ("9a7fffffff", "longer"),  # array claims 2**31 items: refused before allocating
    ("ba7fffffff", "longer"),
    ("18", "ends"),
])
def test_refusals(data: str, reason: str) -> None:
    with pytest.raises(CborError, match=reason):
        cbor.loads(bytes.fromhex(data))


def test_depth_items_and_tag_position_are_bounded() -> None:
    nested = b"\x81" * 9 + b"\x00"
    with pytest.raises(CborError, match="deeply"):
        cbor.loads(nested, max_depth=8)
    assert cbor.loads(b"\x81" * 8 + b"\x00", max_depth=8) == [[[[[[[[0]]]]]]]]
    with pytest.raises(CborError, match="too many"):
        cbor.loads(cbor.dumps(list(range(100))), max_items=50)
    # A tag is only accepted on the outermost item, and only the caller's tags.
    with pytest.raises(CborError, match="tag 16"):
        cbor.loads(bytes.fromhex("81d000"), tags=(16,))
    with pytest.raises(CborError, match="tag 18"):
        cbor.loads(bytes.fromhex("d200"), tags=(16,))
    with pytest.raises(CborError, match="bytes"):
        cbor.loads("text")  # type: ignore[arg-type]


def test_encoder_refuses_what_it_cannot_represent() -> None:
    for bad in (1.5, {b"k": 1}, {True: 1}, 2**64, -(2**64) - 1, object()):
        with pytest.raises(CborError):
            cbor.dumps(bad)


values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.integers(-1000, 1000) | st.text(max_size=8), children, max_size=5),
    max_leaves=25)


@given(values)
@settings(max_examples=300, deadline=None)
def test_round_trip_and_agreement_with_cbor2(value: Any) -> None:
    encoded = cbor.dumps(value)
    assert encoded == cbor2.dumps(value)
    assert cbor.loads(encoded, max_depth=64, max_items=10_000) == value


@given(st.binary(max_size=64))
@settings(max_examples=1500, deadline=None)
def test_arbitrary_bytes_decode_or_raise_cbor_error(data: bytes) -> None:
    try:
        value = cbor.loads(data, tags=(16, 18))
    except CborError:
        return
    except IotsecError as exc:  # pragma: no cover - would be a wrong error family
        pytest.fail(f"wrong error type {type(exc).__name__}")
    # Whatever we accept, cbor2 decodes to the same value and re-encodes to the same bytes.
    plain = value.value if isinstance(value, cbor.Tag) else value
    other = cbor2.loads(data)
    assert (other.value if isinstance(other, cbor2.CBORTag) else other) == plain
    assert cbor.dumps(value) == data
