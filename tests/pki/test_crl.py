"""CRLs: v2, signed by the issuing CA, readable by cryptography and honoured by openssl."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.errors import InvalidInputError
from iotsec.pki import der
from iotsec.pki.crl import RevocationReason, build_crl, encode_entry
from tests.pki.asn1 import children, read_one
from tests.pki.support import Chain, issue_leaf, run_openssl, write_pem


def _crl(chain: Chain, entries: list[bytes], *, number: int = 7) -> tuple[bytes, datetime]:
    this_update = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    crl = build_crl(chain.issuing, entries, number=number, this_update=this_update,
                    next_update=this_update + timedelta(days=7))
    return crl, this_update


def _tbs_fields(crl_der: bytes) -> list[tuple[int, bytes]]:
    tag, content = read_one(crl_der)
    assert tag == der.SEQUENCE
    parts = children(content)
    assert len(parts) == 3
    assert parts[0][0] == der.SEQUENCE
    return children(parts[0][1])


def _write_crl(path: Path, crl_der: bytes) -> Path:
    crl = x509.load_der_x509_crl(crl_der)
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def _verify_with_crl(openssl: str, tmp_path: Path, chain: Chain, crl_der: bytes,
                     leaf_der: bytes):
    return run_openssl(
        openssl, "verify", "-x509_strict", "-crl_check",
        "-CRLfile", _write_crl(tmp_path / "crl.pem", crl_der),
        "-CAfile", write_pem(tmp_path / "root.pem", chain.root.der),
        "-untrusted", write_pem(tmp_path / "issuing.pem", chain.issuing.der),
        write_pem(tmp_path / "leaf.pem", leaf_der),
    )


def test_crl_with_entries(p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    revoked = issue_leaf(p256_chain.issuing, "dev-revoked", now)
    kept = issue_leaf(p256_chain.issuing, "dev-kept", now)
    at = now.replace(microsecond=0) - timedelta(hours=3)
    plan = {
        revoked.serial: (at, RevocationReason.keyCompromise),
        0x0123456789ABCDEF0123: (at - timedelta(days=1), RevocationReason.unspecified),
        2**158 + 5: (at - timedelta(days=2), RevocationReason.cessationOfOperation),
        2**64 + 1: (at, RevocationReason.aACompromise),
    }
    entries = [encode_entry(s, when, reason) for s, (when, reason) in plan.items()]
    crl_der, this_update = _crl(p256_chain, entries, number=2**70 + 3)

    crl = x509.load_der_x509_crl(crl_der)
    issuing = p256_chain.issuing.certificate
    assert crl.is_signature_valid(issuing.public_key())
    assert crl.issuer == issuing.subject
    assert crl.signature_algorithm_oid == issuing.signature_algorithm_oid
    assert crl.last_update_utc == this_update
    assert crl.next_update_utc == this_update + timedelta(days=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2**70 + 3
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert {e.oid for e in crl.extensions} == {aki.oid, x509.CRLNumber.oid}
    assert len(crl) == len(plan)
    for serial, (when, reason) in plan.items():
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None, hex(serial)
        assert entry.revocation_date_utc == when
        if reason is RevocationReason.unspecified:
            # RFC 5280 5.3.1: reasonCode unspecified SHOULD be absent.
            assert len(entry.extensions) == 0
        else:
            ext = entry.extensions.get_extension_for_class(x509.CRLReason)
            assert not ext.critical
            assert ext.value.reason.name == _pyca_reason_name(reason)
    assert crl.get_revoked_certificate_by_serial_number(kept.serial) is None

    # v2: the version field is present and is INTEGER 1.
    fields = _tbs_fields(crl_der)
    assert fields[0] == (der.INTEGER, b"\x01")
    assert [tag for tag, _ in fields] == [
        der.INTEGER, der.SEQUENCE, der.SEQUENCE, der.UTC_TIME, der.UTC_TIME, der.SEQUENCE, 0xA0,
    ]

    result = _verify_with_crl(openssl, tmp_path, p256_chain, crl_der, revoked.der)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "error 23" in output
    assert "certificate revoked" in output
    result = _verify_with_crl(openssl, tmp_path, p256_chain, crl_der, kept.der)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("leaf.pem: OK")

    text = run_openssl(openssl, "crl", "-in", tmp_path / "crl.pem", "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert "Version 2 (0x1)" in text.stdout
    assert "Key Compromise" in text.stdout


def _pyca_reason_name(reason: RevocationReason) -> str:
    return {
        RevocationReason.keyCompromise: "key_compromise",
        RevocationReason.cACompromise: "ca_compromise",
        RevocationReason.affiliationChanged: "affiliation_changed",
        RevocationReason.superseded: "superseded",
        RevocationReason.cessationOfOperation: "cessation_of_operation",
        RevocationReason.privilegeWithdrawn: "privilege_withdrawn",
        RevocationReason.aACompromise: "aa_compromise",
    }[reason]


@pytest.mark.parametrize("reason", list(RevocationReason), ids=lambda r: r.name)
def test_every_reason_code_round_trips(reason: RevocationReason) -> None:
    at = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)
    entry = encode_entry(12345, at, reason)
    _, content = read_one(entry)
    parts = children(content)
    assert parts[0] == (der.INTEGER, bytes.fromhex("3039"))
    assert parts[1] == (der.UTC_TIME, b"310304050607Z")
    if reason is RevocationReason.unspecified:
        assert len(parts) == 2
    else:
        # Extensions { Extension { reasonCode, OCTET STRING { ENUMERATED reason } } }
        assert parts[2] == (
            der.SEQUENCE,
            der.sequence(der.oid("2.5.29.21"), der.octet_string(bytes((0x0A, 1, int(reason))))),
        )


def test_empty_crl(p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    crl_der, _ = _crl(p256_chain, [], number=1)
    # RFC 5280 5.1.2.6: no revokedCertificates field at all, not an empty SEQUENCE.
    fields = _tbs_fields(crl_der)
    assert [tag for tag, _ in fields] == [
        der.INTEGER, der.SEQUENCE, der.SEQUENCE, der.UTC_TIME, der.UTC_TIME, 0xA0,
    ]
    crl = x509.load_der_x509_crl(crl_der)
    assert len(crl) == 0
    assert crl.is_signature_valid(p256_chain.issuing.certificate.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1

    leaf = issue_leaf(p256_chain.issuing, "dev-ok", datetime.now(UTC))
    result = _verify_with_crl(openssl, tmp_path, p256_chain, crl_der, leaf.der)
    assert result.returncode == 0, result.stdout + result.stderr
    text = run_openssl(openssl, "crl", "-in", tmp_path / "crl.pem", "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert "No Revoked Certificates" in text.stdout


def test_crl_accepts_a_generator_and_long_lengths(p256_chain: Chain) -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    count = 3000  # well past the 2-octet length form
    entries = (encode_entry(2**100 + i, at, RevocationReason.superseded) for i in range(count))
    crl_der, _ = _crl(p256_chain, list(entries))
    crl = x509.load_der_x509_crl(crl_der)
    assert len(crl) == count
    assert crl.is_signature_valid(p256_chain.issuing.certificate.public_key())
    assert crl.get_revoked_certificate_by_serial_number(2**100 + count - 1) is not None
    crl2, _ = _crl(p256_chain, (encode_entry(9, at, RevocationReason.superseded) for _ in [0]))
    assert len(x509.load_der_x509_crl(crl2)) == 1


def test_crl_from_another_issuer_does_not_verify(p256_chain: Chain) -> None:
    crl_der, _ = _crl(p256_chain, [])
    crl = x509.load_der_x509_crl(crl_der)
    assert not crl.is_signature_valid(p256_chain.root.certificate.public_key())


# --- reasons ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keyCompromise", RevocationReason.keyCompromise),
        ("KEYCOMPROMISE", RevocationReason.keyCompromise),
        ("key-compromise", RevocationReason.keyCompromise),
        ("key_compromise", RevocationReason.keyCompromise),
        ("Key-Compromise", RevocationReason.keyCompromise),
        ("  superseded\n", RevocationReason.superseded),
        ("ca-compromise", RevocationReason.cACompromise),
        ("CA_COMPROMISE", RevocationReason.cACompromise),
        ("aa-compromise", RevocationReason.aACompromise),
        ("cessation-of-operation", RevocationReason.cessationOfOperation),
        ("privilege_withdrawn", RevocationReason.privilegeWithdrawn),
        ("affiliationchanged", RevocationReason.affiliationChanged),
        ("unspecified", RevocationReason.unspecified),
        ("0", RevocationReason.unspecified),
        ("1", RevocationReason.keyCompromise),
        ("5", RevocationReason.cessationOfOperation),
        ("9", RevocationReason.privilegeWithdrawn),
        ("10", RevocationReason.aACompromise),
        (" 4 ", RevocationReason.superseded),
    ],
)
def test_reason_parse_accepts(text: str, expected: RevocationReason) -> None:
    assert RevocationReason.parse(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "certificateHold",
        "certificate-hold",
        "CERTIFICATE_HOLD",
        "removeFromCRL",
        "remove-from-crl",
        "6",  # certificateHold
        "8",  # removeFromCRL
        "7",  # unassigned
        "11",
        "1.0",
        "0x1",
        "",
        "   ",
        "garbage",
        "key compromise",
        "keyCompromise!",
    ],
)
def test_reason_parse_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown revocation reason"):
        RevocationReason.parse(text)


@pytest.mark.parametrize("text", ["-1", "1-0", "1_0", "_5"])
def test_reason_parse_refuses_mangled_numbers(text: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown revocation reason"):
        RevocationReason.parse(text)


@pytest.mark.parametrize("text", ["\u00b2", "1\u00b9", "\u2460", "\u0663"])
def test_reason_parse_refuses_non_decimal_digits(text: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown revocation reason"):
        RevocationReason.parse(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_reason_parse_ascii_never_raises_anything_else(text: str) -> None:
    try:
        reason = RevocationReason.parse(text)
    except InvalidInputError:
        return
    assert reason in set(RevocationReason)
    wanted = text.strip().replace("-", "").replace("_", "").lower()
    assert wanted in {reason.name.lower(), str(reason.value)}


def test_reason_values_are_rfc5280() -> None:
    assert {r.name: r.value for r in RevocationReason} == {
        "unspecified": 0,
        "keyCompromise": 1,
        "cACompromise": 2,
        "affiliationChanged": 3,
        "superseded": 4,
        "cessationOfOperation": 5,
        "privilegeWithdrawn": 9,
        "aACompromise": 10,
    }
