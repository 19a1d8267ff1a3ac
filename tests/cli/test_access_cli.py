"""``iotsec role``, ``group``, ``authz`` and ``policy``: the access-control worked example and
its refusals, run in-process."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.cli.plain import note, say
from tests.cli.support import Cli

FW_RULE = "firmware:download:firmware/${device.group}/#"


def roles(cli: Cli) -> dict[str, Any]:
    return {r["name"]: r for r in cli.json("role", "list")}


def exported(cli: Cli) -> str:
    return cli.ok("policy", "export").out


def test_worked_example(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("device", "add", "sensor-0001", "--group", "plant-a")

    # The default least-privilege role: a device's own topics, nothing else.
    allowed = cli("authz", "check", "sensor-0001", "publish", "devices/sensor-0001/temp")
    assert allowed.code == 0
    assert allowed.out.startswith("allow")
    assert "role 'device' rule 0" in allowed.out
    assert allowed.err == ""
    denied = cli("authz", "check", "sensor-0001", "subscribe", "devices/#")
    assert denied.code == 1
    assert denied.out.startswith("deny")
    assert "default deny" in denied.out
    assert denied.err == ""
    other = cli("authz", "check", "sensor-0001", "publish", "devices/sensor-0002/temp")
    assert other.code == 1

    # A role with allows and a deny, bound to the device's group.
    created = cli.json("role", "add", "telemetry", "--allow", "subscribe:devices/+/telemetry",
                       "--allow", "receive:devices/+/telemetry",
                       "--deny", "subscribe:devices/+/telemetry/private",
                       "--description", "read every device's telemetry")
    assert created["name"] == "telemetry"
    assert created["description"] == "read every device's telemetry"
    assert [(r["effect"], r["action"], r["resource"]) for r in created["rules"]] == [
        ("deny", "subscribe", "devices/+/telemetry/private"),
        ("allow", "subscribe", "devices/+/telemetry"),
        ("allow", "receive", "devices/+/telemetry")]
    assert (created["devices"], created["groups"]) == (0, [])
    assert cli.json("group", "add", "plant-a", "--role", "telemetry") == {
        "name": "plant-a", "roles": ["telemetry"]}

    inherited = cli("authz", "check", "sensor-0001", "subscribe", "devices/+/telemetry")
    assert inherited.code == 0
    assert "allow: allowed by role 'telemetry' rule 1: allow subscribe:devices/+/telemetry" \
        in inherited.out
    overlap = cli("authz", "check", "sensor-0001", "subscribe", "devices/+/telemetry/#")
    assert overlap.code == 1
    assert "denied by role 'telemetry' rule 0" in overlap.out

    # Firmware for the device's group: a role with an API action and a variable.
    cli.ok("role", "add", "fw", "--allow", FW_RULE)
    assigned = cli.json("device", "assign", "sensor-0001", "--role", "fw")
    assert assigned == {"name": "sensor-0001", "roles": ["device", "fw"]}
    decision = cli.json("authz", "check", "sensor-0001", "firmware:download",
                        "firmware/plant-a/v2.bin")
    assert decision == {
        "allowed": True, "decision": "allow", "role": "fw", "rule_index": 0,
        "rule": "allow firmware:download:firmware/${device.group}/#",
        "explanation": "allowed by role 'fw' rule 0: "
                       "allow firmware:download:firmware/${device.group}/#"}
    other_group = cli("authz", "check", "sensor-0001", "firmware:download",
                      "firmware/plant-b/v2.bin", "--json")
    assert other_group.code == 1
    assert other_group.json()["decision"] == "deny"
    assert other_group.json()["rule"] is None

    listed = roles(cli)
    assert sorted(listed) == ["device", "fw", "telemetry"]
    assert (listed["device"]["devices"], listed["fw"]["devices"]) == (1, 1)
    assert listed["telemetry"]["groups"] == ["plant-a"]
    shown = cli.json("role", "show", "fw")
    assert shown == listed["fw"]
    text = cli.ok("role", "show", "telemetry").out
    assert "devices/+/telemetry/private" in text
    assert "plant-a" in text
    assert "telemetry" in cli.ok("role", "list").out


def test_disabled_device_is_denied(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("device", "add", "d1")
    cli.ok("device", "disable", "d1")
    result = cli("authz", "check", "d1", "publish", "devices/d1/x")
    assert result.code == 1
    assert "disabled" in result.out


def test_cert_serial_variable(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("role", "add", "by-cert", "--allow", "publish:certs/${cert.serial}")
    cli.ok("device", "add", "d1", "--role", "by-cert")
    assert cli("authz", "check", "d1", "publish", "certs/0A1B", "--cert-serial", "0a1b"
               ).code == 0
    assert cli("authz", "check", "d1", "publish", "certs/0A1B").code == 1


def test_policy_export_edit_dry_run_apply(cli: Cli, ready: dict[str, Any],
                                          tmp_path: Path) -> None:
    cli.ok("device", "add", "sensor-0001", "--group", "plant-a")
    path = tmp_path / "policy.yaml"
    written = cli.ok("policy", "export", "-o", str(path))
    assert written.out == ""
    original = path.read_text()
    assert original == exported(cli)
    assert "devices/${device.id}/#" in original

    # Applying the export as it is changes nothing.
    assert cli.ok("policy", "apply", str(path)).out.strip() == "policy unchanged"

    data = yaml.safe_load(original)
    data["roles"].append({"name": "fw", "description": "firmware",
                          "rules": [{"effect": "allow", "action": "firmware:download",
                                     "resource": "firmware/${device.group}/#"}]})
    data["groups"] = {"plant-a": ["device", "fw"]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    dry = cli.json("policy", "apply", str(path), "--dry-run")
    assert dry == {"created": ["fw"], "updated": [], "unchanged": ["device"], "removed": [],
                   "groups_changed": ["plant-a"], "dry_run": True}
    assert exported(cli) == original
    assert cli("authz", "check", "sensor-0001", "firmware:download", "firmware/plant-a/x"
               ).code == 1
    text = cli.ok("policy", "apply", str(path), "--dry-run").out
    assert "created (dry run, nothing written): fw" in text
    assert exported(cli) == original

    applied = cli.ok("policy", "apply", str(path)).out
    assert "created: fw" in applied
    assert "group bindings changed: plant-a" in applied
    assert cli("authz", "check", "sensor-0001", "firmware:download", "firmware/plant-a/x"
               ).code == 0
    assert roles(cli)["fw"]["groups"] == ["plant-a"]
    now = exported(cli)
    assert now != original
    # The new export is the policy just applied: applying it again is a no-op.
    path.write_text(now)
    again = cli.json("policy", "apply", str(path))
    assert (again["created"], again["updated"], again["groups_changed"]) == ([], [], [])


def test_policy_apply_from_stdin_and_prune(cli: Cli, ready: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("role", "add", "spare", "--allow", "publish:spare/${device.id}")
    document = exported(cli).replace("- name: spare", "- name: renamed")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(document.encode())))
    result = cli.json("policy", "apply", "-", "--prune")
    assert (result["created"], result["removed"]) == (["renamed"], ["spare"])
    assert sorted(roles(cli)) == ["device", "renamed"]


def test_prune_refuses_a_held_role(cli: Cli, ready: dict[str, Any], tmp_path: Path) -> None:
    cli.ok("role", "add", "spare", "--allow", "publish:spare/${device.id}")
    cli.ok("device", "add", "d1", "--role", "spare")
    before = exported(cli)
    path = tmp_path / "p.yaml"
    path.write_text("roles: []\n")
    error = cli.refused("policy", "apply", str(path), "--prune")
    assert "still held" in error
    assert exported(cli) == before


def test_policy_lint_exit_codes(cli: Cli, ready: dict[str, Any]) -> None:
    # The default policy: at most an informational note (the role nobody holds yet).
    fresh = cli("policy", "lint", "--json")
    assert fresh.code == 0
    assert [(f["severity"], f["code"]) for f in fresh.json()] == [("info", "unused-role")]
    cli.ok("device", "add", "d1")
    assert cli.json("policy", "lint") == []
    assert cli.ok("policy", "lint").out.strip() == "no findings"

    cli.ok("role", "add", "everything", "--allow", "subscribe:#")
    flagged = cli("policy", "lint")
    assert flagged.code == 1
    assert "wildcard-all" in flagged.out
    findings = cli("policy", "lint", "--json")
    assert findings.code == 1
    assert [(f["severity"], f["code"], f["role"], f["rule_index"]) for f in findings.json()] == [
        ("high", "wildcard-all", "everything", 0), ("info", "unused-role", "everything", None)]


def test_policy_lint_medium_finding_fails_low_does_not(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("device", "add", "d1", "--role", "device")
    cli.ok("role", "add", "typo", "--allow", "publish:a/${device.id}",
           "--deny", "publish:b/${device.id}")
    cli.ok("device", "assign", "d1", "--role", "typo")
    low = cli("policy", "lint", "--json")
    assert low.code == 0
    assert [f["code"] for f in low.json()] == ["deny-shadows-nothing"]
    cli.ok("role", "add", "connector", "--allow", "connect:+")
    cli.ok("group", "add", "g", "--role", "connector")
    assert cli("policy", "lint").code == 1


# --- refusals --------------------------------------------------------------------------------


def test_role_add_with_a_misplaced_variable(cli: Cli, ready: dict[str, Any]) -> None:
    before = exported(cli)
    error = cli.refused("role", "add", "bad", "--allow", "publish:dev-${device.id}")
    assert "a variable must be a whole level" in error
    assert "devices/${device.id}/#" in error  # the hint
    assert exported(cli) == before


@pytest.mark.parametrize(("args", "fragment"), [
    (("role", "add", "bad", "--allow", "publish:d/${device.nope}"), "unknown variable"),
    (("role", "add", "bad", "--allow", "publish:a/#/b"), "'a/#/b'"),
    (("role", "add", "bad", "--allow", "publish"), "ACTION:RESOURCE"),
    (("role", "add", "bad", "--allow", "fly:x"), "unknown action 'fly'"),
    (("role", "add", "bad", "--deny", "Teleport:now:x"), "unknown action"),
    (("role", "add", "bad", "--allow", "publish:"), "1 to 1024 characters"),
    (("role", "add", "bad name", "--allow", "publish:x"), "role name"),
    (("role", "add", "device"), "already exists"),
    (("role", "show", "ghost"), "does not exist"),
    (("group", "add", "g", "--role", "ghost"), "'ghost' does not exist"),
    (("group", "add", "bad/group", "--role", "device"), "group name"),
    (("device", "assign", "ghost", "--role", "device"), "not registered"),
    (("authz", "check", "ghost", "publish", "x"), "not registered"),
    (("policy", "apply", "missing.yaml"), "does not exist"),
])
def test_refusals_change_nothing(cli: Cli, ready: dict[str, Any], args: tuple[str, ...],
                                 fragment: str) -> None:
    before = (exported(cli), cli.json("device", "list"))
    assert fragment in cli.refused(*args)
    assert (exported(cli), cli.json("device", "list")) == before


def test_device_assign_unknown_role(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("device", "add", "d1")
    error = cli.refused("device", "assign", "d1", "--role", "ghost")
    assert "'ghost' does not exist" in error
    assert roles(cli)["device"]["devices"] == 1
    assert "ghost" not in roles(cli)


def test_group_add_twice(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("group", "add", "plant-a", "--role", "device")
    assert "already exists" in cli.refused("group", "add", "plant-a", "--role", "device")


def test_authz_check_bad_input_is_refused_not_denied(cli: Cli, ready: dict[str, Any]) -> None:
    cli.ok("device", "add", "d1")
    cli.refused("authz", "check", "d1", "fly", "x")
    cli.refused("authz", "check", "d1", "publish", "devices/+/x")
    cli.refused("authz", "check", "d1", "subscribe", "a/#/b")


@pytest.mark.parametrize(("content", "line"), [
    ("roles:\n  - name: fw\n    rules:\n      - effect: allow\n        action: publish\n"
     "        resource: dev-${device.id}\n", 6),
    ("roles:\n  - name: fw\n    colour: red\n", 3),
    ("roles: []\ngroups:\n  g: &x [device]\n", 3),
    ("roles:\n  - name: a\n  - name: a\n", 3),
    ("roles: [\n", 2),
])
def test_policy_apply_of_a_bad_file(cli: Cli, ready: dict[str, Any], tmp_path: Path,
                                    content: str, line: int) -> None:
    cli.ok("device", "add", "d1", "--group", "plant-a")
    before = (exported(cli), cli.json("role", "list"))
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    error = cli.refused("policy", "apply", str(path))
    assert error.startswith(f"iotsec: error: line {line}: "), error
    assert cli.refused("policy", "apply", str(path), "--dry-run") == error
    assert (exported(cli), cli.json("role", "list")) == before


def test_policy_apply_binding_an_undefined_role(cli: Cli, ready: dict[str, Any],
                                                tmp_path: Path) -> None:
    before = exported(cli)
    path = tmp_path / "p.yaml"
    path.write_text("roles:\n  - name: fw\ngroups:\n  g: [fw, ghost]\n")
    assert "'ghost'" in cli.refused("policy", "apply", str(path))
    assert exported(cli) == before


def test_policy_apply_of_a_large_file(cli: Cli, ready: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (1024 * 1024 + 1))
    assert "limit is 1048576" in cli.refused("policy", "apply", str(path))


def test_unknown_role_in_device_add_registers_nothing(cli: Cli, ready: dict[str, Any]) -> None:
    before = (exported(cli), cli.json("device", "list"))
    error = cli.refused("device", "add", "d1", "--group", "new-group", "--role", "device",
                        "--role", "ghost")
    assert "'ghost' does not exist" in error
    assert "not registered" in cli.refused("device", "show", "d1")
    assert cli.json("device", "list") == []
    assert (exported(cli), cli.json("device", "list")) == before
    # And the id is still free.
    cli.ok("device", "add", "d1", "--role", "device")


def test_a_stored_role_always_exports_to_an_applicable_document(
        cli: Cli, ready: dict[str, Any], tmp_path: Path) -> None:
    result = cli("role", "add", "verbose", "--description", "x" * 2000)
    if result.code == 0:
        path = tmp_path / "p.yaml"
        cli.ok("policy", "export", "-o", str(path))
        assert cli("policy", "apply", str(path)).code == 0


def test_the_answer_is_one_plain_line_however_long(cli: Cli, ready: dict[str, Any]) -> None:
    """``authz check`` answers on one line, never wrapped (a script greps it), without Rich."""
    topic = "plant/" + "/".join(f"line-{n:02d}" for n in range(20)) + "/${device.id}"
    cli.ok("role", "add", "long", "--allow", f"publish:{topic}")
    device = "sensor-" + "x" * 100
    cli.ok("device", "add", device, "--role", "long")
    answer = cli("authz", "check", device, "publish", topic.replace("${device.id}", device))
    assert answer.code == 0
    assert answer.out == (f"allow: allowed by role 'long' rule 0: allow publish:{topic}\n")


def test_plain_lines_show_control_characters_escaped(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    """What a plain line prints (a file name, a topic) never reaches a terminal as an
    escape sequence: stdout's answer and stderr's note alike."""
    say("deny: \x1b[2Jtopic\tx")
    note("wrote \x1b]0;title\x07file")
    out, err = capsys.readouterr()
    assert out == "deny: \\x1b[2Jtopic\\tx\n"
    assert err == "wrote \\x1b]0;title\\x07file\n"
