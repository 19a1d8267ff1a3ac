"""Certificate profiles: validity bounds and DNS name checks."""

from __future__ import annotations

import pytest

from iotsec.errors import InvalidInputError
from iotsec.pki.profiles import (
    DEVICE,
    MAX_VALIDITY_DAYS,
    SERVER,
    CertProfile,
    check_days,
    check_dns_name,
)
from iotsec.pki.x509 import OID_CLIENT_AUTH, OID_SERVER_AUTH


def test_builtin_profiles() -> None:
    assert (DEVICE.validity_days, DEVICE.extended_key_usage) == (365, (OID_CLIENT_AUTH,))
    assert (SERVER.validity_days, SERVER.extended_key_usage) == (397, (OID_SERVER_AUTH,))
    assert DEVICE.dns_names("dev-1") == ()


@pytest.mark.parametrize("days", [1, 365, MAX_VALIDITY_DAYS])
def test_check_days_accepts(days: int) -> None:
    assert check_days(days) == days


@pytest.mark.parametrize("days", [0, -1, MAX_VALIDITY_DAYS + 1])
def test_check_days_refuses(days: int) -> None:
    with pytest.raises(InvalidInputError, match=f"{days} days is out of range"):
        check_days(days)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a", "a"),
        ("Example.COM", "example.com"),
        ("dev-1.mqtt.example", "dev-1.mqtt.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
    ],
)
def test_check_dns_name_accepts(name: str, expected: str) -> None:
    assert check_dns_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-a.example",
        "a-.example",
        "a..example",
        ".example",
        "a" * 64 + ".example",
        ".".join(["a" * 50] * 6),  # 305 characters
        "exa mple.com",
        "*.example",
        "ex_ample.com",
        "caf\u00e9.example",
    ],
)
def test_check_dns_name_refuses(name: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid DNS name"):
        check_dns_name(name)


@pytest.mark.parametrize("name", ["example.com\n", "a\n"])
def test_check_dns_name_refuses_trailing_newline(name: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid DNS name"):
        check_dns_name(name)


def test_profile_dns_templates() -> None:
    profile = CertProfile(name="t", validity_days=1, extended_key_usage=(OID_SERVER_AUTH,),
                          dns_templates=("{device_id}.devices.example",))
    assert profile.dns_names("Dev-7") == ("dev-7.devices.example",)
    with pytest.raises(InvalidInputError):
        profile.dns_names("dev:7")
