"""Policy documents: what parses, what round-trips, and how every refusal names its line."""

from __future__ import annotations

import contextlib
import json
import re
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.access.document import MAX_DOCUMENT_BYTES, parse_document, render_document
from iotsec.access.policy import Role, Rule, default_device_role
from iotsec.errors import InputTooLargeError, IotsecError, PolicyError

FW = Role.build("fw", [
    Rule.parse("allow", "firmware:download", "firmware/${device.group}/#"),
    Rule.parse("deny", "firmware:download", "firmware/${device.group}/beta/#"),
], description="firmware for the device's group")
READER = Role.build("reader", [
    Rule.parse("allow", "subscribe", "fleet/${device.attr.site}/+/status"),
    Rule.parse("allow", "connect", "${cert.cn}"),
    Rule.parse("allow", "publish", "certs/${cert.serial}"),
    Rule.parse("deny", "receive", "fleet/+/secret"),
])
EMPTY = Role.build("empty", [], description="nothing at all: ünïcödé, 'quotes', #hash, a: b")


class _Slow(Exception):
    pass


def timed(seconds: float, data: bytes) -> tuple[str, object]:
    """``parse_document(data)`` with a time limit. Returns ``("slow", None)`` if it ran
    over, ``("raised", error)`` or ``("returned", document)``. Nothing is re-raised: a
    traceback interrupted by a signal, or a RecursionError's, is not worth reporting."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs signal.setitimer")

    def _alarm(signum: int, frame: object) -> None:
        raise _Slow

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    outcome: tuple[str, object]
    try:
        outcome = ("returned", parse_document(data))
    except _Slow:
        outcome = ("slow", None)
    except Exception as exc:
        exc.__traceback__ = None
        exc.__context__ = None
        outcome = ("raised", exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return outcome


def refused_within(seconds: float, data: bytes) -> str:
    kind, value = timed(seconds, data)
    assert kind == "raised", f"{kind} within {seconds} s instead of a PolicyError"
    assert isinstance(value, PolicyError), f"{type(value).__name__} instead of a PolicyError"
    return str(value)


def refused(text: str | bytes) -> str:
    """Parse, expect a PolicyError, return its message."""
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(PolicyError) as info:
        parse_document(data)
    return str(info.value)


def line_of(message: str) -> int:
    match = re.match(r"line (\d+): ", message)
    assert match, message
    return int(match.group(1))


# --- round trips ---------------------------------------------------------------------------


def test_render_parses_back_to_the_same_policy() -> None:
    roles = [READER, default_device_role(), FW, EMPTY]
    groups = {"plant-a": ["fw", "device"], "plant-b": ["reader"], "lab": ["fw"]}
    text = render_document(roles, groups)
    assert text.startswith("# iotsec access policy")
    doc = parse_document(text.encode())
    assert doc.roles == tuple(sorted(roles, key=lambda r: r.name))
    assert dict(doc.groups) == {"lab": ("fw",), "plant-a": ("device", "fw"),
                                "plant-b": ("reader",)}
    # Rendering what was parsed gives the same text: the form is canonical.
    assert render_document(doc.roles, doc.groups) == text


def test_groups_without_roles_are_not_rendered() -> None:
    doc = parse_document(render_document([FW], {"idle": [], "busy": ["fw"]}).encode())
    assert dict(doc.groups) == {"busy": ("fw",)}


def test_a_role_listed_twice_for_a_group_is_bound_once() -> None:
    doc = parse_document(b"groups:\n  g: [fw, device, fw]\n")
    assert dict(doc.groups) == {"g": ("device", "fw")}


def test_rule_order_is_kept() -> None:
    role = Role.build("ordered", [Rule.parse("allow", "publish", f"t/{i}") for i in range(20)])
    doc = parse_document(render_document([role], {}).encode())
    assert [r.resource for r in doc.roles[0].rules] == [f"t/{i}" for i in range(20)]


def test_json_is_accepted() -> None:
    data = {"version": 1,
            "roles": [{"name": "fw", "description": "firmware for the device's group",
                       "rules": [{"effect": r.effect.value, "action": r.action,
                                  "resource": r.resource} for r in FW.rules]},
                      {"name": "bare"}],
            "groups": {"plant-a": ["fw", "bare"]}}
    for dumped in (json.dumps(data), json.dumps(data, indent=2)):
        doc = parse_document(dumped.encode())
        assert doc.roles == (FW, Role.build("bare", []))
        assert dict(doc.groups) == {"plant-a": ("bare", "fw")}


def test_json_errors_name_the_line() -> None:
    text = ('{"roles": [\n  {"name": "a",\n   "rules": [\n'
            '     {"effect": "allow", "action": 5, "resource": "x"}]}]}\n')
    message = refused(text)
    assert line_of(message) == 4
    assert "action" in message


def test_tab_indented_json_is_accepted() -> None:
    data = {"roles": [{"name": "a", "rules": []}], "groups": {"g": ["a"]}}
    doc = parse_document(json.dumps(data, indent="\t").encode())
    assert [r.name for r in doc.roles] == ["a"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "null\n", "version: 1\n",
                                  "{}", "roles: []\ngroups: {}\n", "\ufeffroles: []\n"])
def test_empty_documents_are_empty_policies(text: str) -> None:
    doc = parse_document(text.encode())
    assert doc.roles == ()
    assert dict(doc.groups) == {}


def test_optional_fields_default() -> None:
    doc = parse_document(b"roles:\n  - name: a\n")
    assert doc.roles == (Role(name="a", rules=(), description=""),)


def test_description_with_next_line_character_round_trips() -> None:
    role = Role.build("r", [], description="a\x85b")
    assert parse_document(render_document([role], {}).encode()).roles == (role,)


def test_every_accepted_action_renders_to_an_applicable_document() -> None:
    longest = "a" * 31 + ":" + "b" * 32
    role = Role.build("api", [Rule.parse("allow", longest, "x")])
    assert parse_document(render_document([role], {}).encode()).roles == (role,)


# --- size ----------------------------------------------------------------------------------


def test_size_limit_is_checked_before_parsing() -> None:
    # Over the limit by one byte, and not valid YAML: the size is what is reported.
    kind, error = timed(2, b"[" * (MAX_DOCUMENT_BYTES + 1))
    assert kind == "raised"
    assert isinstance(error, InputTooLargeError)
    assert str(MAX_DOCUMENT_BYTES) in str(error)
    kind, error = timed(2, b"roles: [" + b"{name: a}, " * (MAX_DOCUMENT_BYTES // 10))
    assert kind == "raised"
    assert isinstance(error, InputTooLargeError)


def test_a_document_at_the_limit_is_read() -> None:
    data = b"roles: []\n# " + b"x" * (MAX_DOCUMENT_BYTES - 13) + b"\n"
    assert len(data) == MAX_DOCUMENT_BYTES
    assert parse_document(data).roles == ()


# --- refusals, each naming its line ----------------------------------------------------------

RULE = "roles:\n  - name: a\n    rules:\n      - effect: allow\n        action: {action}\n" \
       "        resource: {resource}\n"

REFUSALS = [
    # (id, document, line, fragment of the message)
    ("unknown-top-level-key", "version: 1\nroles: []\nextra: 1\n", 3, "extra"),
    ("unknown-role-key", "roles:\n  - name: a\n    colour: red\n", 3, "colour"),
    ("unknown-rule-key", RULE.format(action="publish", resource="x") + "        when: now\n",
     7, "when"),
    ("action-not-a-string", RULE.format(action="5", resource="x"), 5, "valid string"),
    ("resource-not-a-string", RULE.format(action="publish", resource="[x]"), 6,
     "valid string"),
    ("rules-not-a-list", "roles:\n  - name: a\n    rules: x\n", 3, "valid list"),
    ("roles-a-mapping", "version: 1\nroles: {}\n", 2, "valid list"),
    ("roles-a-string", "roles: all\n", 1, "valid list"),
    ("groups-a-list", "roles: []\ngroups: [a]\n", 2, "groups"),
    ("group-roles-a-string", "roles: []\ngroups:\n  g: a\n", 3, "valid list"),
    ("name-not-a-string", "roles:\n  - name: 12\n", 2, "valid string"),
    ("missing-name", "roles:\n  - description: x\n", 2, "name"),
    ("document-a-list", "- a\n- b\n", 1, "document"),
    ("document-a-scalar", "hello\n", 1, "document"),
    ("wrong-version", "version: 2\nroles: []\n", 1, "version"),
    ("bad-effect", "roles:\n  - name: a\n    rules:\n      - effect: permit\n"
     "        action: publish\n        resource: x\n", 4, "effect"),
    ("missing-effect", "roles:\n  - name: a\n    rules:\n      - action: publish\n"
     "        resource: x\n", 4, "effect"),
    ("malformed-filter", "roles:\n  - name: a\n    rules:\n"
     "      - {effect: allow, action: publish, resource: ok}\n"
     "      - effect: allow\n        action: subscribe\n        resource: a/#/b\n",
     7, "'a/#/b'"),
    ("variable-inside-a-level", RULE.format(action="publish", resource="dev-${device.id}"),
     6, "whole level"),
    ("variable-with-suffix", RULE.format(action="publish", resource="d/${device.id}x"),
     6, "whole level"),
    ("unknown-variable", RULE.format(action="publish", resource="d/${device.secret}"),
     6, "unknown variable"),
    ("empty-resource", RULE.format(action="publish", resource="''"), 6, "resource"),
    ("bad-role-name", "roles:\n  - name: 'bad name'\n", 2, "role name"),
    ("duplicate-role", "roles:\n  - name: a\n  - name: b\n  - name: a\n", 4, "defined twice"),
    ("duplicate-yaml-key", "roles:\n  - name: a\n    name: b\n", 3, "duplicate key 'name'"),
    ("duplicate-top-level-key", "roles: []\ngroups: {}\nroles: []\n", 3, "duplicate key"),
    ("duplicate-json-key", '{"roles": [],\n "roles": []}', 2, "duplicate key"),
    ("yaml-syntax", "roles:\n  - name: a\n   bad: [\n", 3, "not valid YAML/JSON"),
    ("unclosed-flow", "roles: [\n  {name: a},\n", 3, "not valid YAML/JSON"),
    ("anchor", "roles:\n  - &r\n    name: a\n", 2, "anchors and aliases"),
    ("alias", "roles: []\ngroups:\n  g: &x [a]\n  h: *x\n", 3, "anchors and aliases"),
    ("python-tag", "roles: !!python/object/apply:os.system ['true']\n", 1,
     "not valid YAML/JSON"),
    ("group-binds-invalid-role-name", "roles: []\ngroups:\n  ok: [fine]\n  g2: ['bad role']\n",
     4, "role name 'bad role'"),
    ("group-role-not-a-string", "roles: []\ngroups:\n  g: [null]\n", 3, "valid string"),
    ("invalid-group-name", "roles: []\ngroups:\n  ok: []\n  'bad/group': [x]\n", 4,
     "group name"),
    ("group-name-with-space", "groups:\n  'a b': [x]\n", 2, "group name"),
    ("group-name-not-a-string", "groups:\n  5: [x]\n", 2, "valid string"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_line(text: str, line: int, fragment: str) -> None:
    message = refused(text)
    assert line_of(message) == line, message
    assert fragment in message, message


def test_refusals_carry_a_hint() -> None:
    with pytest.raises(PolicyError) as info:
        parse_document(RULE.format(action="publish", resource="dev-${device.id}").encode())
    assert "${device.id}" in info.value.hint


def test_bad_action_is_refused() -> None:
    message = refused(RULE.format(action="fly", resource="x"))
    assert message.startswith("line ")
    assert "unknown action 'fly'" in message


def test_bad_action_names_the_action_line() -> None:
    assert line_of(refused(RULE.format(action="fly", resource="x"))) == 5


def test_non_utf8_is_refused() -> None:
    message = refused(b"roles:\n  - name: caf\xe9\n")
    assert "UTF-8" in message
    refused(b"\xff\xfe" + "roles: []".encode("utf-16-le"))


def test_non_utf8_names_the_line() -> None:
    assert line_of(refused(b"roles:\n  - name: caf\xe9\n")) == 2


def test_control_characters_are_refused() -> None:
    message = refused(b"roles:\n  - name: a\x00\n")
    assert "line 2: the document contains a control character" in message


@pytest.mark.parametrize("value", ["true", "1.0"])
def test_version_must_be_the_integer_one(value: str) -> None:
    refused(f"version: {value}\nroles: []\n")


BILLION_LAUGHS = "\n".join(
    [f'a0: &a0 ["{"lol" * 3}"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    + ["roles: *a11", ""])


def test_billion_laughs_is_refused_quickly() -> None:
    message = refused_within(1, BILLION_LAUGHS.encode())
    assert line_of(message) == 1
    assert "anchors and aliases" in message


def test_aliases_are_refused_even_without_anchors_in_use() -> None:
    # Unused anchors are refused too: the document must be written out in full.
    assert "anchors" in refused("roles:\n  - name: &n a\n")


def test_deep_nesting_is_a_policy_error() -> None:
    refused_within(5, b"roles: " + b"[" * 1500 + b"]" * 1500)


def test_unclosed_nesting_is_refused_quickly() -> None:
    refused_within(2, b"[" * 20_000)


# --- never anything but an iotsec error ------------------------------------------------------


def _parse_or_iotsec_error(data: bytes) -> None:
    """Parses, or is refused with a PolicyError (an IotsecError); anything else escapes."""
    assert issubclass(PolicyError, IotsecError)
    with contextlib.suppress(PolicyError):
        parse_document(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_iotsec_errors(data: bytes) -> None:
    _parse_or_iotsec_error(data)


YAMLISH = st.sampled_from(["roles:", "groups:", "version:", "- ", "name:", "rules:",
                           "effect:", "action:", "resource:", "allow", "deny", "publish",
                           "${device.id}", "#", "+", "/", "{", "}", "[", "]", ",", ":",
                           "\n", "  ", "'", '"', "&a", "*a", "!!str", "? ", "---", "...",
                           "%YAML 1.1\n", "~", "null", "1", "x"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300),
                 st.lists(YAMLISH, max_size=60).map("".join)))
def test_arbitrary_text_raises_only_iotsec_errors(text: str) -> None:
    _parse_or_iotsec_error(text.encode("utf-8", "surrogatepass"))


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
RESOURCES = st.lists(st.sampled_from(["a", "b", "+", "${device.id}", "${device.group}",
                                      "${device.attr.site}", "${cert.cn}"]),
                     min_size=1, max_size=4).map("/".join) | st.just("#") \
    | st.lists(st.sampled_from(["a", "+", "${cert.serial}"]), min_size=1, max_size=3).map(
        lambda levels: "/".join([*levels, "#"]))
RULES = st.builds(Rule.parse, st.sampled_from(["allow", "deny"]),
                  st.sampled_from(["connect", "publish", "subscribe", "receive",
                                   "firmware:download", "config:read"]), RESOURCES)
# U+0085 is left out: see test_description_with_next_line_character_round_trips.
DESCRIPTIONS = st.text(st.characters(exclude_categories=["Cs"],
                                     exclude_characters="\x85"), max_size=40)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(NAMES, st.tuples(st.lists(RULES, max_size=5), DESCRIPTIONS),
                       max_size=4),
       st.dictionaries(NAMES, st.lists(NAMES, max_size=3), max_size=3))
def test_render_then_parse_is_the_identity(
        roles: dict[str, tuple[list[Rule], str]], groups: dict[str, list[str]]) -> None:
    built = [Role.build(name, rules, description) for name, (rules, description)
             in roles.items()]
    doc = parse_document(render_document(built, groups).encode())
    assert doc.roles == tuple(sorted(built, key=lambda r: r.name))
    assert dict(doc.groups) == {g: tuple(sorted(set(rs))) for g, rs in groups.items() if rs}
