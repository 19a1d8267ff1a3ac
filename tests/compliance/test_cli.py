"""``iotsec compliance`` as run from a shell: exit codes 0/1/2, report files, attestations,
and bad input refused with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from iotsec.app.events import list_events
from iotsec.app.runtime import open_runtime
from iotsec.cli.main import main
from iotsec.compliance.evidence import MAX_SCAN_REPORT
from iotsec.compliance.report import compliance_report_schema
from iotsec.config import Settings
from tests.cli.support import use_home
from tests.compliance.scanfiles import scan_report


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_home(monkeypatch, tmp_path / "home")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["compliance", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err


def events(home: Path, kind: str) -> int:
    rt = open_runtime(Settings(home=home))
    try:
        return len(list_events(rt.engine, kind=kind))
    finally:
        rt.close()


def test_frameworks(home, capsys):
    code, out, _ = run(capsys, "frameworks", "--json")
    assert code == 0
    assert [(f["id"], f["provisions"]) for f in json.loads(out)] == [
        ("etsi-en-303-645", 68), ("nistir-8259a", 6), ("owasp-iot-top10", 10)]


def test_report_exit_codes_follow_fail_on(home, capsys, tmp_path):
    files = {k: tmp_path / f"r.{k}" for k in ("json", "html", "sarif")}
    code, out, _ = run(capsys, "report", "--framework", "etsi-en-303-645",
                       "--json", str(files["json"]), "--html", str(files["html"]),
                       "--sarif", str(files["sarif"]))
    # A fresh home: 4-1 fails (nothing is justified yet) and the admin token never
    # expires (5.1-3): high, at the default --fail-on high.
    assert code == 1, out
    assert "4-1" in out and "score" in out
    doc = json.loads(files["json"].read_text())
    jsonschema.validate(doc, compliance_report_schema())
    assert files["html"].read_text().startswith("<!DOCTYPE html>")
    assert json.loads(files["sarif"].read_text())["version"] == "2.1.0"
    assert run(capsys, "report", "-f", "etsi-en-303-645", "--fail-on", "critical")[0] == 0
    assert run(capsys, "report", "-f", "etsi-en-303-645", "--fail-on", "never")[0] == 0
    assert run(capsys, "report", "-f", "nistir-8259a", "--fail-on", "low")[0] == 1


def test_json_to_stdout(home, capsys):
    code, out, _ = run(capsys, "report", "-f", "owasp-iot-top10", "--json", "-",
                       "--fail-on", "never")
    assert code == 0
    doc = json.loads(out)
    assert doc["format"] == "iotsec-compliance-report"
    assert [p["id"] for p in doc["provisions"]] == [f"I{i}" for i in range(1, 11)]


def test_scan_file_is_used(home, capsys, tmp_path):
    scan = tmp_path / "scan.json"
    scan.write_bytes(scan_report())
    code, out, _ = run(capsys, "report", "-f", "owasp-iot-top10", "--scan", str(scan),
                       "--json", "-", "--fail-on", "never")
    assert code == 0
    doc = json.loads(out)
    assert doc["sources"]["scan"]["findings"] == 2
    i2 = next(p for p in doc["provisions"] if p["id"] == "I2")
    assert i2["status"] == "fail"


def test_attest_then_list_with_history(home, capsys):
    assert run(capsys, "attest", "5.2-1", "--framework", "etsi-en-303-645", "--status",
               "manual", "--note", "drafting")[0] == 0
    code, out, _ = run(capsys, "attest", "5.2-1", "-f", "etsi-en-303-645", "--status",
                       "pass", "--note", "published at /security", "--json")
    assert code == 0 and json.loads(out)["version"] == 2
    code, out, _ = run(capsys, "attestations", "--json")
    assert [(a["provision"], a["version"]) for a in json.loads(out)] == [("5.2-1", 2)]
    code, out, _ = run(capsys, "attestations", "-f", "etsi-en-303-645", "--history",
                       "--json")
    history = json.loads(out)
    assert [(a["version"], a["status"]) for a in history] == [(1, "manual"), (2, "pass")]
    assert history[0]["actor"].startswith("cli")
    code, out, _ = run(capsys, "attestations")
    assert code == 0 and "5.2-1" in out


@pytest.mark.parametrize(("args", "message"), [
    (["5.2-1", "-f", "iso-27001", "--status", "pass", "--note", "x"], "unknown framework"),
    (["9.9-9", "-f", "etsi-en-303-645", "--status", "pass", "--note", "x"], "no provision"),
    (["5.2-1", "-f", "etsi-en-303-645", "--status", "great", "--note", "x"], "not allowed"),
    (["5.2-1", "-f", "etsi-en-303-645", "--status", "pass", "--note", " "], "note is empty"),
    (["5.2-1", "-f", "etsi-en-303-645", "--status", "pass", "--note", "x" * 5000],
     "limit is 4000"),
])
def test_bad_attestations_exit_2_and_write_nothing(home, capsys, args, message):
    code, _, err = run(capsys, "attest", *args)
    assert code == 2 and message in err and err.startswith("iotsec: error:")
    assert run(capsys, "attestations", "--json")[1].strip() == "[]"
    assert events(home, "compliance.attest") == 0


def _big(path: Path) -> str:
    with path.open("wb") as fh:
        fh.truncate(MAX_SCAN_REPORT + 1)
    return str(path)


@pytest.mark.parametrize(("scan", "message"), [
    (lambda d: (d / "s.json").write_text("{oops") and str(d / "s.json"), "not JSON"),
    (lambda d: (d / "s.json").write_text('{"format": "x"}') and str(d / "s.json"),
     "'format' is not"),
    (lambda d: _big(d / "s.json"), "the limit is"),
    (lambda d: str(d / "missing.json"), "does not exist"),
])
def test_bad_scan_files_exit_2_and_write_nothing(home, capsys, tmp_path, scan, message):
    out_file = tmp_path / "report.json"
    code, _, err = run(capsys, "report", "-f", "etsi-en-303-645", "--scan", scan(tmp_path),
                       "--json", str(out_file), "--html", str(tmp_path / "r.html"))
    assert code == 2 and message in err, err
    assert not out_file.exists() and not (tmp_path / "r.html").exists()
    assert events(home, "compliance.report") == 0


def test_unknown_framework_and_bad_fail_on_exit_2(home, capsys, tmp_path):
    code, _, err = run(capsys, "report", "-f", "iso-27001", "--json", str(tmp_path / "x"))
    assert code == 2 and "unknown framework" in err and "etsi-en-303-645" in err
    assert not (tmp_path / "x").exists()
    assert run(capsys, "report", "-f", "etsi-en-303-645", "--fail-on", "urgent")[0] == 2


def test_only_one_report_on_stdout(home, capsys):
    code, out, err = run(capsys, "report", "-f", "etsi-en-303-645", "--json", "-",
                         "--sarif", "-")
    assert code == 2 and "only one report" in err and not out


def test_without_a_home_it_could_not_run(tmp_path, monkeypatch, capsys):
    use_home(monkeypatch, tmp_path / "none", initialise=False)
    code, _, err = run(capsys, "report", "-f", "etsi-en-303-645")
    assert code == 2 and "not an initialised iotsec home" in err


def test_json_schema_option(capsys):
    code, out, _ = run(capsys, "report", "-f", "etsi-en-303-645", "--json-schema")
    assert code == 0 and json.loads(out)["$id"] == "urn:iotsec:schema:compliance-report:1"
