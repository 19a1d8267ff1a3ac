"""Serial numbers: random and RFC 5280-sized; formatted and parsed like openssl prints them."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.errors import InvalidInputError
from iotsec.pki import der
from iotsec.pki.serial import format_serial, parse_serial, random_serial
from tests.helpers import make_key, self_signed
from tests.pki.asn1 import read_one


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "01"),
        (0xF, "0F"),
        (0xAB, "AB"),
        (0x100, "0100"),
        (0xABCDEF, "ABCDEF"),
        (2**64, "010000000000000000"),
        (2**160 - 1, "F" * 40),
    ],
)
def test_format_serial(value: int, text: str) -> None:
    assert format_serial(value) == text


def test_format_serial_matches_openssl(openssl: str) -> None:
    # 'openssl x509 -serial' prints even-length upper-case hex; compare on a real certificate.
    key = make_key("p256")
    for serial in (0x0ABC, 0x123456789, random_serial()):
        now = datetime.now(UTC)
        cert = self_signed(key, "s", not_before=now, not_after=now + timedelta(days=1),
                           serial=serial)
        out = subprocess.run(
            [openssl, "x509", "-noout", "-serial"],
            input=cert.public_bytes(serialization.Encoding.PEM),
            capture_output=True, check=True, timeout=30,
        )
        assert out.stdout.decode().strip() == f"serial={format_serial(serial)}"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("01", 1),
        ("1", 1),
        ("0x1F", 0x1F),
        ("0X1f", 0x1F),
        ("ab:cd:ef", 0xABCDEF),
        ("AB:CD:EF", 0xABCDEF),
        ("ab cd ef", 0xABCDEF),
        ("  0xab:cd ef \n", 0xABCDEF),
        ("F" * 40, 2**160 - 1),
        (":".join(["ff"] * 20), 2**160 - 1),
        ("0x" + "F" * 40, 2**160 - 1),
    ],
)
def test_parse_serial_accepts(text: str, value: int) -> None:
    assert parse_serial(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0x",
        ":",
        "xyz",
        "12G4",
        "-1",
        "-0x01",
        "+01",
        "0",
        "00",
        "0x0000",
        "F" * 41,
        "1" + "0" * 40,
        "12.34",
        "\u0661\u0662",  # Arabic-Indic digits are not hex
        "ab\tcd",
    ],
)
def test_parse_serial_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_serial(text)
    assert "serial" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=2**160 - 1))
def test_serial_round_trip(value: int) -> None:
    text = format_serial(value)
    assert re.fullmatch(r"(?:[0-9A-F]{2})+", text)
    assert parse_serial(text) == value
    assert parse_serial(text.lower()) == value
    assert parse_serial(":".join(text[i : i + 2] for i in range(0, len(text), 2))) == value
    assert parse_serial("0x" + text) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_serial_raises_only_invalid_input(text: str) -> None:
    try:
        value = parse_serial(text)
    except InvalidInputError:
        return
    assert 1 <= value < 2**160


def test_random_serials_fit_rfc5280() -> None:
    serials = {random_serial() for _ in range(2000)}
    assert len(serials) == 2000
    for serial in serials:
        assert serial >= 2**64
        _, content = read_one(der.integer(serial))
        assert len(content) <= 20
        assert content[0] < 0x80  # positive
    # 159 random bits: the top bit is set in about half of them.
    assert any(s.bit_length() == 159 for s in serials)
