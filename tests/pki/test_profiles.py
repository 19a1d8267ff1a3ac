"""Certificate profiles: validity bounds, DNS name checks, and the named profiles' parser
(fuzzed with Hypothesis), key types and RFC 9608 noRevAvail."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.errors import InvalidInputError, ProfileRefusedError
from iotsec.pki.profiles import (
    DEVICE,
    KEY_TYPES,
    MAX_DNS_SOURCES,
    MAX_VALIDITY_DAYS,
    NO_REVOCATION_MAX_DAYS,
    SERVER,
    CertProfile,
    check_days,
    check_dns_name,
    eku_names,
    key_type_of,
    parse_dns_sources,
    parse_ekus,
    parse_key_types,
    parse_profile_name,
)
from iotsec.pki.x509 import OID_CLIENT_AUTH, OID_SERVER_AUTH, no_rev_avail


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


# --- named profiles: the parser, key types, DNS names from attributes, noRevAvail ---------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_SOURCE = st.one_of(
    st.text(max_size=80),
    st.builds(lambda k: f"attr:{k}", st.text(max_size=70)),
    st.builds(lambda k: f"attr:{k}", st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,10}",
                                                   fullmatch=True)),
    st.builds(lambda a, b: f"{a}{{device_id}}{b}", st.text(max_size=30), st.text(max_size=30)),
    st.builds(lambda a, b: f"{a}{{device_id}}.{b}.example", st.sampled_from(["", "x-", "a"]),
              _LABEL),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
)
_NAME = st.one_of(st.text(max_size=80),
                  st.from_regex(r"[a-z0-9][a-z0-9._-]{0,70}", fullmatch=True),
                  st.sampled_from(["device", "server"]))


@settings(max_examples=400, deadline=None)
@given(name=_NAME, days=st.one_of(st.integers(-10, 40_000), st.integers(1, 10)),
       key_types=st.lists(st.sampled_from([*KEY_TYPES, "P256", "dsa", "", " rsa2048 ", "x,y"]),
                          max_size=8).map(",".join),
       ekus=st.lists(st.sampled_from(["clientAuth", "serverAuth", "SERVERAUTH", "codeSigning",
                                      ""]), max_size=4).map(",".join),
       dns_from=st.lists(_SOURCE, max_size=20), no_revocation=st.booleans())
def test_parse_accepts_only_valid_profiles(name: str, days: int, key_types: str, ekus: str,
                                           dns_from: list[str], no_revocation: bool) -> None:
    """Any input gives a valid profile or an InvalidInputError, never another exception;
    what is accepted obeys every rule and survives a round trip through its written form."""
    try:
        profile = CertProfile.parse(name, days=days, key_types=key_types, ekus=ekus,
                                    dns_from=dns_from, no_revocation=no_revocation)
    except InvalidInputError:
        return
    assert parse_profile_name(profile.name) == name and name not in ("device", "server")
    assert 1 <= profile.validity_days <= MAX_VALIDITY_DAYS
    assert not no_revocation or profile.validity_days <= NO_REVOCATION_MAX_DAYS
    assert profile.key_types and set(profile.key_types) <= set(KEY_TYPES)
    assert set(profile.extended_key_usage) <= {OID_CLIENT_AUTH, OID_SERVER_AUTH}
    assert len(profile.dns_from) <= MAX_DNS_SOURCES
    again = CertProfile.parse(profile.name, days=profile.validity_days,
                              key_types=profile.key_types,
                              ekus=eku_names(profile.extended_key_usage),
                              dns_from=profile.dns_from, no_revocation=profile.no_revocation)
    assert again == profile
    # Every template gives a valid DNS name for a valid device id.
    for dns in profile.dns_names("dev-1", dict.fromkeys(profile.dns_attributes,
                                                        "x.example")):
        assert check_dns_name(dns) == dns


@settings(max_examples=300, deadline=None)
@given(st.lists(_SOURCE, max_size=20))
def test_dns_sources_parse_or_refuse(sources: list[str]) -> None:
    try:
        templates, attributes = parse_dns_sources(sources)
    except InvalidInputError:
        return
    assert all(":" not in t and t.count("{device_id}") <= 1 for t in templates)
    assert len(templates) + len(attributes) <= MAX_DNS_SOURCES


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_attribute_values_are_dns_names_or_refused(value: str) -> None:
    profile = CertProfile.parse("p", days=1, key_types="p256", ekus="clientAuth",
                                dns_from=["attr:host"])
    try:
        names = profile.dns_names("dev-1", {"host": value})
    except ProfileRefusedError:
        return
    assert names == (check_dns_name(value),)


@pytest.mark.parametrize(("text", "expected"), [
    ("p256, ED25519 ,p256", ("p256", "ed25519")),
    (["rsa4096", "rsa2048,p384"], ("p384", "rsa2048", "rsa4096")),
])
def test_parse_key_types(text: str | list[str], expected: tuple[str, ...]) -> None:
    assert parse_key_types(text) == expected


def test_parse_ekus_and_sources() -> None:
    assert parse_ekus("serverAuth,clientauth") == (OID_CLIENT_AUTH, OID_SERVER_AUTH)
    assert parse_dns_sources(["attr:hostname", "{device_id}.Example.com", "attr:hostname"]) == (
        ("{device_id}.example.com",), ("hostname",))
    with pytest.raises(InvalidInputError, match="neither attr:NAME"):
        parse_dns_sources(["{device_id}.{device_id}.example"])


@pytest.mark.parametrize(("key", "kind"), [
    (ec.generate_private_key(ec.SECP256R1()), "p256"),
    (ec.generate_private_key(ec.SECP384R1()), "p384"),
    (ec.generate_private_key(ec.SECP521R1()), "p521"),
    (ed25519.Ed25519PrivateKey.generate(), "ed25519"),
    (rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa2048"),
    (rsa.generate_private_key(public_exponent=65537, key_size=2560), "rsa2560"),
])
def test_key_types_of_keys(key: Any, kind: str) -> None:
    assert key_type_of(key.public_key()) == kind
    allowing = CertProfile.parse("p", days=1, key_types="p256,ed25519", ekus="clientAuth")
    if kind in ("p256", "ed25519"):
        allowing.check_key(key.public_key())
    else:
        with pytest.raises(ProfileRefusedError, match=f"allows p256, ed25519 keys; the CSR's "
                           f"key is {kind}"):
            allowing.check_key(key.public_key())
    DEVICE.check_key(key.public_key())  # the built-ins take every accepted key


def test_validity_of_named_and_builtin_profiles() -> None:
    named = CertProfile.parse("p", days=30, key_types="p256", ekus="clientAuth")
    assert named.check_validity(None) == 30 and named.check_validity(30) == 30
    with pytest.raises(ProfileRefusedError, match="at most 30 days"):
        named.check_validity(31)
    assert DEVICE.check_validity(3650) == 3650


def test_no_rev_avail_extension_encoding() -> None:
    # SEQUENCE { OID 2.5.29.56, OCTET STRING { NULL } }: non-critical, so no BOOLEAN.
    assert no_rev_avail() == bytes.fromhex("3009 0603 551d38 0402 0500".replace(" ", ""))
    with pytest.raises(InvalidInputError, match="at most 7 days"):
        CertProfile(name="p", validity_days=8, extended_key_usage=(OID_CLIENT_AUTH,),
                    no_revocation=True)
