"""Durations as operators write them, and the Unix-seconds helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.errors import InvalidInputError
from iotsec.timeutil import from_ts, parse_duration, ts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        ("7", timedelta(days=7)),
        (" 30 d ", timedelta(days=30)),
        ("0s", timedelta(0)),
        ("999999w", timedelta(weeks=999999)),
        ("007d", timedelta(days=7)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "d",
        "30x",
        "30D",
        "30 days",
        "1.5d",
        "-1d",
        "+1d",
        "1d2h",
        "1000000d",
        "30dd",
        "d30",
        "0x10",
        "thirty",
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a duration") as info:
        parse_duration(text)
    assert "30d" in info.value.hint


@pytest.mark.parametrize("text", ["\u0663\u0660d", "\uff13\uff10d"])
def test_parse_duration_refuses_non_ascii_digits(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_duration(text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=20) | st.from_regex(r"\A\s*\d{1,7}\s*[smhdwx]?\s*\Z"))
def test_parse_duration_raises_only_invalid_input(text: str) -> None:
    try:
        result = parse_duration(text)
    except InvalidInputError:
        return
    assert timedelta(0) <= result <= timedelta(weeks=999999)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 999_999), st.sampled_from(["s", "m", "h", "d", "w", ""]))
def test_parse_duration_units(number: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}[unit]
    assert parse_duration(f"{number}{unit}") == timedelta(seconds=number * seconds)


def test_ts_and_from_ts() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ts(moment) == 1893553445
    assert from_ts(1893553445) == moment
    assert from_ts(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert ts(datetime(2030, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1)))) == 1893553445
    assert ts(moment.replace(microsecond=999_999)) == 1893553445
