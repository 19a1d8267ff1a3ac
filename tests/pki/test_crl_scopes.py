"""Complete CRLs with freshestCRL, delta CRLs and partition CRLs (RFC 5280 5.2.4-5.2.6),
as pyca/cryptography reads them and as openssl verifies certificates against them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from iotsec.errors import InvalidInputError
from iotsec.pki.crl import CrlScope, RevocationReason, build_crl, crl_partition, encode_entry
from iotsec.pki.csr import parse_csr
from iotsec.pki.issue import IssuedCertificate, issue_device
from iotsec.pki.profiles import DEVICE
from tests.helpers import make_csr
from tests.pki.support import Chain, run_openssl, write_pem

BASE_URL = "http://pki.example.com/crl"


def _leaf(chain: Chain, device_id: str, now: datetime, crl_url: str) -> IssuedCertificate:
    checked = parse_csr(make_csr(der=True))
    return issue_device(chain.issuing, device_id=device_id, spki=checked.spki, profile=DEVICE,
                        now=now, crl_url=crl_url)


def _sign(chain: Chain, entries: list[bytes], number: int, scope: CrlScope,
          this_update: datetime) -> bytes:
    return build_crl(chain.issuing, entries, number=number, this_update=this_update,
                     next_update=this_update + timedelta(days=1), scope=scope)


def _pem(path: Path, crl_der: bytes) -> Path:
    path.write_bytes(x509.load_der_x509_crl(crl_der).public_bytes(serialization.Encoding.PEM))
    return path


def _verify(openssl: str, tmp_path: Path, chain: Chain, leaf: bytes, *crls: Path,
            deltas: bool = True, extended: bool = True) -> str:
    args: list[str | Path] = ["verify", "-x509_strict", "-crl_check"]
    if deltas:
        # OpenSSL 3.0 skips delta CRLs when it picks the complete CRL only with
        # -extended_crl; without it the delta (thisUpdate later) may be taken as the
        # complete CRL and the base's entries ignored (see docs: delta CRLs).
        args += ["-use_deltas", "-extended_crl"] if extended else ["-use_deltas"]
    for crl in crls:
        args += ["-CRLfile", crl]
    result = run_openssl(openssl, *args, "-CAfile", write_pem(tmp_path / "root.pem",
                                                              chain.root.der),
                         "-untrusted", write_pem(tmp_path / "issuing.pem", chain.issuing.der),
                         write_pem(tmp_path / "leaf.pem", leaf))
    return result.stdout + result.stderr


def test_delta_crl_reports_what_was_revoked_after_the_base(
        p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    old = _leaf(p256_chain, "dev-old", now, BASE_URL)
    late = _leaf(p256_chain, "dev-late", now, BASE_URL)
    kept = _leaf(p256_chain, "dev-kept", now, BASE_URL)
    base = _sign(p256_chain, [encode_entry(old.serial, now, RevocationReason.keyCompromise)],
                 41, CrlScope(freshest_url=BASE_URL + "/delta"), now)
    later = now + timedelta(minutes=1)
    delta = _sign(p256_chain, [encode_entry(late.serial, later, RevocationReason.superseded)],
                  43, CrlScope(delta_of=41), later)

    parsed = x509.load_der_x509_crl(delta)
    assert parsed.is_signature_valid(p256_chain.issuing.certificate.public_key())
    indicator = parsed.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical and indicator.value.crl_number == 41
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 43
    freshest = x509.load_der_x509_crl(base).extensions.get_extension_for_class(x509.FreshestCRL)
    assert not freshest.critical
    assert [n.value for p in freshest.value for n in p.full_name or ()] == [BASE_URL + "/delta"]

    base_pem, delta_pem = _pem(tmp_path / "base.pem", base), _pem(tmp_path / "delta.pem", delta)
    # Without the delta, the certificate revoked after the base is still good ...
    assert _verify(openssl, tmp_path, p256_chain, late.der, base_pem).strip().endswith("OK")
    # ... with it, openssl reports it revoked (also with -use_deltas alone, as the delta
    # is then consulted); the base's own entry stays revoked.
    for extended in (True, False):
        out = _verify(openssl, tmp_path, p256_chain, late.der, base_pem, delta_pem,
                      extended=extended)
        assert "certificate revoked" in out, out
    out = _verify(openssl, tmp_path, p256_chain, old.der, base_pem, delta_pem)
    assert "certificate revoked" in out, out
    assert _verify(openssl, tmp_path, p256_chain, kept.der, base_pem,
                   delta_pem).strip().endswith("OK")

    text = run_openssl(openssl, "crl", "-in", delta_pem, "-noout", "-text").stdout
    assert "Delta CRL Indicator: critical" in text and "41" in text
    text = run_openssl(openssl, "crl", "-in", base_pem, "-noout", "-text").stdout
    assert "Freshest CRL" in text and f"URI:{BASE_URL}/delta" in text


def test_a_delta_for_a_newer_base_is_not_applied_to_an_older_one(
        p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    """openssl applies a delta only to a complete CRL numbered from its BaseCRLNumber on:
    a relying party with an older complete CRL must fetch the complete CRL again."""
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    late = _leaf(p256_chain, "dev-late", now, BASE_URL)
    base = _sign(p256_chain, [], 10, CrlScope(freshest_url=BASE_URL + "/delta"), now)
    delta = _sign(p256_chain, [encode_entry(late.serial, now, RevocationReason.unspecified)],
                  20, CrlScope(delta_of=15), now)
    out = _verify(openssl, tmp_path, p256_chain, late.der, _pem(tmp_path / "b.pem", base),
                  _pem(tmp_path / "d.pem", delta))
    assert out.strip().endswith("OK"), out


def test_partition_crl_is_in_scope_only_for_its_own_certificates(
        p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    mine = _leaf(p256_chain, "dev-p3", now, BASE_URL + "/p/3")
    revoked = _leaf(p256_chain, "dev-p3-revoked", now, BASE_URL + "/p/3")
    other = _leaf(p256_chain, "dev-p4", now, BASE_URL + "/p/4")
    crl = _sign(p256_chain, [encode_entry(revoked.serial, now, RevocationReason.keyCompromise)],
                5, CrlScope(partition_url=BASE_URL + "/p/3", only_user_certs=True), now)
    idp = x509.load_der_x509_crl(crl).extensions.get_extension_for_class(
        x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.only_contains_user_certs
    assert [n.value for n in idp.value.full_name or ()] == [BASE_URL + "/p/3"]
    pem = _pem(tmp_path / "p3.pem", crl)
    assert _verify(openssl, tmp_path, p256_chain, mine.der, pem,
                   deltas=False).strip().endswith("OK")
    assert "certificate revoked" in _verify(openssl, tmp_path, p256_chain, revoked.der, pem,
                                            deltas=False)
    # The CDP of another partition does not match the IDP: the CRL is out of its scope.
    out = _verify(openssl, tmp_path, p256_chain, other.der, pem, deltas=False)
    assert "different CRL scope" in out, out
    text = run_openssl(openssl, "crl", "-in", pem, "-noout", "-text").stdout
    assert "Issuing Distribution Point: critical" in text
    assert "Only User Certificates" in text and f"URI:{BASE_URL}/p/3" in text


def test_a_delta_must_follow_its_base_and_urls_must_be_printable(p256_chain: Chain) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with pytest.raises(InvalidInputError, match="does not follow"):
        _sign(p256_chain, [], 7, CrlScope(delta_of=7), now)
    with pytest.raises(InvalidInputError, match="distribution point URL"):
        _sign(p256_chain, [], 8, CrlScope(freshest_url="http://a b/"), now)
    with pytest.raises(InvalidInputError):
        CrlScope(only_user_certs=True)
    with pytest.raises(InvalidInputError):
        CrlScope(delta_of=-1)


@given(st.integers(min_value=0, max_value=2**159), st.integers(min_value=1, max_value=4096))
def test_partition_of_a_serial_is_stable_and_in_range(serial: int, count: int) -> None:
    k = crl_partition(serial, count)
    assert 0 <= k < count and k == crl_partition(serial, count)


@given(text=st.text(max_size=80))
def test_any_url_text_signs_a_valid_crl_or_is_refused(p256_chain: Chain, text: str) -> None:
    """A URL from the settings ends up in DER: either a CRL that cryptography reads back
    with that very name, or a clear refusal."""
    try:
        crl = _sign(p256_chain, [], 2, CrlScope(freshest_url=text),
                    datetime.now(UTC).replace(microsecond=0))
    except InvalidInputError:
        assert not text or any(not 0x21 <= ord(ch) <= 0x7E for ch in text)
        return
    ext = x509.load_der_x509_crl(crl).extensions.get_extension_for_class(x509.FreshestCRL)
    assert [n.value for p in ext.value for n in p.full_name or ()] == [text]
