"""The pure enrolment model: template names and templates, enrolment secret ids and
secrets, the device id a template gives, and claim allow lists (with Hypothesis for the
parsers)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iotsec.errors import InvalidDeviceIdError, InvalidInputError
from iotsec.identity.enrolment import (
    MAX_ALLOW_ENTRIES,
    MAX_ALLOW_LIST,
    IdFrom,
    Template,
    device_id_for,
    new_enrolment_secret,
    on_allow_list,
    parse_allow_list,
    parse_profile,
    parse_secret,
    parse_secret_id,
    parse_template_name,
    secret_digest,
)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_CHARS = string.ascii_letters + string.digits + "._-"


# --- names ------------------------------------------------------------------------------


@given(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=1),
       st.text(alphabet=NAME_CHARS, max_size=63))
def test_every_name_of_the_rule_is_accepted(first: str, rest: str) -> None:
    assert parse_template_name(first + rest) == first + rest


@given(st.text(max_size=100))
def test_a_name_is_accepted_exactly_when_it_matches_the_rule(text: str) -> None:
    if NAME.fullmatch(text):
        assert parse_template_name(text) == text
    else:
        with pytest.raises(InvalidInputError, match="is not valid"):
            parse_template_name(text)


@pytest.mark.parametrize("bad", ["", "-lead", ".lead", "a" * 65, "has space", "a/b", "a:b",
                                 "é", "a\nb", "a+b", "#"])
def test_names_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_template_name(bad)


def test_profiles() -> None:
    assert parse_profile("device") == "device"
    assert parse_profile("server") == "server"
    assert parse_profile("short-lived.v2") == "short-lived.v2"  # a named profile's name
    for bad in ("", "Server", "a b", "-x", "x" * 65):
        with pytest.raises(InvalidInputError, match="certificate profile name"):
            parse_profile(bad)


def test_id_sources() -> None:
    assert [s.value for s in IdFrom] == ["csr-cn", "serial-number", "secret"]
    assert IdFrom.parse("serial-number") is IdFrom.SERIAL_NUMBER
    with pytest.raises(InvalidInputError, match="unknown id source"):
        IdFrom.parse("cn")


# --- templates --------------------------------------------------------------------------


def test_a_template_from_loose_input_is_normalised() -> None:
    t = Template.parse("sensors", groups=["b", "a", "b"], roles=["r2", "r1", "r1"],
                       attributes=["site=berlin", "floor=2"], id_from="serial-number",
                       require_approval=True, profile="server")
    assert t.groups == ("a", "b")
    assert t.roles == ("r1", "r2")
    assert dict(t.attributes) == {"site": "berlin", "floor": "2"}
    assert t.id_from is IdFrom.SERIAL_NUMBER
    assert t.require_approval is True
    assert t.profile == "server"


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"name": "bad name"}, "is not valid"),
    ({"name": "t", "groups": ("a/b",)}, "group name"),
    ({"name": "t", "roles": ("bad role",)}, "role name"),
    ({"name": "t", "attributes": {"bad key": "v"}}, "attribute name"),
    ({"name": "t", "profile": "Root CA"}, "certificate profile name"),
    ({"name": "t", "id_from": "nowhere"}, "unknown id source"),
    ({"name": "t", "groups": tuple(f"g{i}" for i in range(33))}, "at most 32 groups"),
])
def test_an_invalid_template_cannot_be_built(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInputError, match=problem):
        Template(**kwargs)  # type: ignore[arg-type]


def test_template_parse_refuses_too_many_roles_before_reading_them() -> None:
    with pytest.raises(InvalidInputError, match="32 roles"):
        Template.parse("t", roles=[f"r{i}" for i in range(40)])


# --- enrolment secrets ------------------------------------------------------------------


def test_new_secrets_have_their_shape_and_are_distinct() -> None:
    made = [new_enrolment_secret() for _ in range(200)]
    for secret_id, secret in made:
        assert re.fullmatch(r"es_[a-z2-7]{16}", secret_id)
        assert parse_secret_id(secret_id) == secret_id
        assert parse_secret(secret) == secret
        assert len(secret) == 43
    assert len({i for i, _ in made}) == len({s for _, s in made}) == 200


def test_the_digest_is_sha256_hex_and_never_the_secret() -> None:
    _, secret = new_enrolment_secret()
    digest = secret_digest(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert secret not in digest
    assert digest == secret_digest(secret)


@given(st.text(max_size=60))
def test_secret_id_parser_is_exact(text: str) -> None:
    if re.fullmatch(r"es_[a-z2-7]{16}", text):
        assert parse_secret_id(text) == text
    else:
        with pytest.raises(InvalidInputError):
            parse_secret_id(text)


@given(st.text(max_size=100))
def test_secret_parser_is_exact_and_never_repeats_the_input(text: str) -> None:
    if re.fullmatch(r"[A-Za-z0-9_-]{43}", text):
        assert parse_secret(text) == text
        return
    with pytest.raises(InvalidInputError) as info:
        parse_secret(text)
    # The message is the same whatever the input: nothing of the secret is in it (a short
    # text may still be a word of it, such as "secr").
    with pytest.raises(InvalidInputError) as other:
        parse_secret("!" * 43)
    assert str(info.value) == str(other.value)
    assert info.value.hint == other.value.hint


def test_secret_parsers_are_bounded() -> None:
    with pytest.raises(InvalidInputError):
        parse_secret_id("es_" + "a" * 1_000_000)
    with pytest.raises(InvalidInputError):
        parse_secret("a" * 1_000_000)


# --- device ids from templates ----------------------------------------------------------


def _ids(id_from: str, **sources: str | None) -> str:
    template = Template.parse("t", id_from=id_from)
    given_sources: dict[str, str | None] = {
        "csr_subject_cn": None, "csr_subject_serial": None, "claim_subject_cn": None,
        "claim_subject_serial": None, "secret_id": None}
    given_sources.update(sources)
    return device_id_for(template, **given_sources)


def test_device_id_sources() -> None:
    assert _ids("csr-cn", csr_subject_cn="dev-1", claim_subject_cn="claim-cn") == "dev-1"
    assert _ids("serial-number", csr_subject_serial="SN1") == "SN1"
    # Enrolling by claim, the manufacturer's serialNumber wins over the CSR's.
    assert _ids("serial-number", csr_subject_serial="forged",
                claim_subject_serial="SN-CLAIM") == "SN-CLAIM"
    assert _ids("secret", secret_id="es_abcdefghijklmnop",
                csr_subject_cn="chosen") == "es_abcdefghijklmnop"


@pytest.mark.parametrize(("id_from", "sources"), [
    ("csr-cn", {"claim_subject_cn": "claim-cn"}),
    ("serial-number", {"csr_subject_cn": "x"}),
    ("secret", {"csr_subject_cn": "x"}),
    ("csr-cn", {"csr_subject_cn": ""}),
])
def test_a_missing_id_source_is_invalid_input(id_from: str, sources: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match="takes the device id"):
        _ids(id_from, **sources)


@pytest.mark.parametrize("bad", ["a/b", "dev#1", "dev+", "x" * 129, "with space"])
def test_a_device_id_from_a_csr_is_checked_like_any(bad: str) -> None:
    with pytest.raises(InvalidDeviceIdError):
        _ids("csr-cn", csr_subject_cn=bad)


# --- allow lists ------------------------------------------------------------------------


def test_allow_list_with_comments_and_blank_lines() -> None:
    text = "# factory batch 7\n\n0A1B2C\nHW-0001  # line comment\n  HW-0002\n#HW-0003\n"
    assert parse_allow_list(text) == frozenset({"0A1B2C", "HW-0001", "HW-0002"})


@given(st.lists(st.text(alphabet=string.ascii_letters + string.digits + "-_:.", min_size=1,
                        max_size=128), max_size=50))
def test_allow_list_round_trip(entries: list[str]) -> None:
    assert parse_allow_list("\n".join(entries)) == frozenset(entries)


@given(st.text(max_size=300))
def test_allow_list_parser_never_fails_unexpectedly(text: str) -> None:
    try:
        allowed = parse_allow_list(text)
    except InvalidInputError:
        return
    assert all(re.fullmatch(r"[\x21-\x7e]{1,128}", e) for e in allowed)


@pytest.mark.parametrize("bad", ["two words", "x" * 129, "caf\u00e9"])
def test_allow_list_refuses_what_is_not_an_id(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="line 2"):
        parse_allow_list(f"ok\n{bad}\n")


def test_allow_list_is_bounded() -> None:
    with pytest.raises(InvalidInputError, match="characters"):
        parse_allow_list("a\n" * (MAX_ALLOW_LIST // 2 + 1))
    with pytest.raises(InvalidInputError, match="entries"):
        parse_allow_list("\n".join(f"e{i}" for i in range(MAX_ALLOW_ENTRIES + 1)))


def test_allow_list_matches_serials_in_any_hex_spelling_and_hardware_ids_exactly() -> None:
    allow = parse_allow_list("0a:1b:2c\nHW-1\n0x00FF\n")
    assert on_allow_list(allow, serial=0x0A1B2C, hardware_id=None)
    assert on_allow_list(allow, serial=0xFF, hardware_id=None)
    assert on_allow_list(allow, serial=1, hardware_id="HW-1")
    assert not on_allow_list(allow, serial=1, hardware_id="hw-1")
    assert not on_allow_list(allow, serial=0x0A1B2D, hardware_id="HW-2")
    assert not on_allow_list(frozenset(), serial=1, hardware_id="HW-1")
