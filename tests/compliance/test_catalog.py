"""The catalogues: every provision, with its exact number, and valid evidence names."""

from __future__ import annotations

from iotsec.compliance.catalog import AUDIT_RULE_IDS, Level
from iotsec.compliance.frameworks import FRAMEWORKS, get_framework
from iotsec.compliance.frameworks.etsi_en_303_645 import ETSI_EN_303_645
from iotsec.compliance.frameworks.nistir_8259a import NISTIR_8259A
from iotsec.compliance.frameworks.owasp_iot import OWASP_IOT_TOP10
from iotsec.scan.rules import ALL_RULES


def _range(clause: str, last: int) -> list[str]:
    return [f"{clause}-{i}" for i in range(1, last + 1)]


ETSI_IDS = ["4-1", *_range("5.1", 5), *_range("5.2", 3), *_range("5.3", 16),
            *_range("5.4", 4), *_range("5.5", 8), *_range("5.6", 9), *_range("5.7", 2),
            *_range("5.8", 3), *_range("5.9", 3), "5.10-1", *_range("5.11", 4),
            *_range("5.12", 3), "5.13-1A", *_range("6", 5)]


def test_etsi_has_every_provision_in_order():
    assert ETSI_EN_303_645.version == "V2.1.1 (2020-06)"
    assert ETSI_EN_303_645.ids == ETSI_IDS
    assert len(ETSI_IDS) == 68
    # Every provision is in the clause its number names.
    for p in ETSI_EN_303_645.provisions:
        assert p.category == p.number.split("-")[0]
        assert p.level in (Level.MANDATORY, Level.RECOMMENDED)


def test_etsi_levels_of_some_well_known_provisions():
    fw = ETSI_EN_303_645
    levels = {p.id: p.level_text for p in fw.provisions}
    assert levels["4-1"] == "M"
    assert levels["5.1-1"] == "M C"
    assert levels["5.2-1"] == "M"
    assert levels["5.2-2"] == "R"
    assert levels["5.3-13"] == "M"
    assert levels["5.5-1"] == "M"
    assert levels["5.6-4"] == "M C"
    assert levels["5.7-1"] == "R"
    assert levels["5.13-1A"] == "M"
    assert levels["6-2"] == "M C"


def test_nist_has_the_six_capabilities_with_elements():
    assert NISTIR_8259A.ids == [
        "device-identification", "device-configuration", "data-protection",
        "logical-access-to-interfaces", "software-update", "cybersecurity-state-awareness"]
    assert [p.title for p in NISTIR_8259A.provisions] == [
        "Device Identification", "Device Configuration", "Data Protection",
        "Logical Access to Interfaces", "Software Update", "Cybersecurity State Awareness"]
    assert all(len(p.elements) >= 2 for p in NISTIR_8259A.provisions)


def test_owasp_has_i1_to_i10():
    assert OWASP_IOT_TOP10.ids == [f"I{i}" for i in range(1, 11)]
    assert OWASP_IOT_TOP10.provisions[0].title == "Weak, Guessable, or Hardcoded Passwords"
    assert OWASP_IOT_TOP10.provisions[9].title == "Lack of Physical Hardening"


def test_lookup_is_by_id_or_number_and_case_insensitive():
    assert get_framework("ETSI-EN-303-645") is ETSI_EN_303_645
    assert get_framework("nope") is None
    p = ETSI_EN_303_645.find("5.13-1a")
    assert p is not None and p.id == "5.13-1A"
    nist = NISTIR_8259A.find("5")
    assert nist is not None and nist.id == "software-update"
    assert ETSI_EN_303_645.find("5.14-1") is None


def test_evidence_names_are_real():
    scan_tags = {t for r in ALL_RULES for t in r.tags}
    for fw in FRAMEWORKS.values():
        for p in fw.provisions:
            assert set(p.checks.audit) <= AUDIT_RULE_IDS
            if p.checks.scan and fw.scan_tag and not p.checks.scan_rules:
                # A provision that expects scan evidence by tag has a scanner rule tagged so.
                assert f"{fw.scan_tag}{p.number}" in scan_tags, (fw.id, p.id)


def test_audit_contract_matches_the_audit_catalogue():
    from iotsec.audit.rules import ALL_RULES as AUDIT_RULES

    assert {r.id for r in AUDIT_RULES} >= AUDIT_RULE_IDS
