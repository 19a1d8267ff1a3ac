"""The OCSP response builder, read back by pyca/cryptography and by OpenSSL, and the
client's verification of answers (ours and forged ones)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from iotsec.errors import OcspResponseError
from iotsec.pki import x509 as enc
from iotsec.pki.crl import RevocationReason
from iotsec.pki.issue import issue_server
from iotsec.pki.keys import KeyType, LocalSigner
from iotsec.pki.ocsp import (
    CertId,
    CertStatus,
    ResponseStatus,
    SingleAnswer,
    build_response,
    error_response,
)
from iotsec.pki.ocsp_client import new_nonce, verify_response
from iotsec.pki.ocsp_responder import RESPONDER_VALIDITY, issue_responder
from tests.ocsp.conftest import CHAIN_TIME
from tests.pki.support import Chain, build_chain

NOW = CHAIN_TIME  # the chains of chain_for are made then


def _cert_id(chain: Chain, serial: int, hash_name: str = "sha1") -> CertId:
    cert = chain.issuing.certificate
    return CertId.for_certificate(cert.subject.public_bytes(), enc.spki_der(cert.public_key()),
                                  serial, hash_name)


def _responder(chain: Chain) -> tuple[LocalSigner, bytes]:
    signer = LocalSigner(chain.issuing.signer.key_type.generate())
    issued = issue_responder(chain.issuing, spki=enc.spki_der(signer.public_key()), now=NOW)
    return signer, issued.der


def _answer(cert_id: CertId, status: CertStatus, **kw: object) -> SingleAnswer:
    return SingleAnswer(cert_id, status, this_update=NOW, next_update=NOW + timedelta(hours=24),
                        **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("key_type", list(KeyType))
def test_responses_read_back_by_cryptography(chain_for: Callable[[KeyType], Chain],
                                             key_type: KeyType) -> None:
    chain = chain_for(key_type)
    signer, responder = _responder(chain)
    revoked_at = NOW - timedelta(minutes=3)
    for status, extra in ((CertStatus.good, {}), (CertStatus.unknown, {}),
                          (CertStatus.revoked, {"revoked_at": revoked_at,
                                                "reason": RevocationReason.keyCompromise})):
        cert_id = _cert_id(chain, 0xABCDEF, "sha256")
        nonce = new_nonce()
        data = build_response(signer, [_answer(cert_id, status, **extra)], produced_at=NOW,
                              nonce=nonce, certs=[responder])
        parsed = ocsp.load_der_ocsp_response(data)
        assert parsed.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert parsed.certificate_status.name.lower() == status.value
        assert parsed.serial_number == 0xABCDEF
        assert parsed.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
            signer.public_key()).digest
        assert parsed.certificates[0].public_bytes(Encoding.DER) == responder
        assert parsed.this_update_utc == NOW
        assert parsed.next_update_utc == NOW + timedelta(hours=24)
        assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == \
            nonce[2:]
        if status is CertStatus.revoked:
            assert parsed.revocation_time_utc == revoked_at
            assert parsed.revocation_reason is x509.ReasonFlags.key_compromise
        # The signature is over the tbsResponseData, with the responder certificate's key.
        checked = verify_response(data, ca=chain.issuing.certificate, cert_id=cert_id,
                                  nonce=nonce, now=NOW)
        assert checked.status is status and checked.signed_by == "delegated"


def test_the_responder_certificate(chain_for: Callable[[KeyType], Chain]) -> None:
    chain = chain_for(KeyType.ECDSA_P256)
    _, der = _responder(chain)
    cert = x509.load_der_x509_certificate(der)
    assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= RESPONDER_VALIDITY + \
        timedelta(minutes=1)
    cert.verify_directly_issued_by(chain.issuing.certificate)


def test_error_responses() -> None:
    for status in (ResponseStatus.malformedRequest, ResponseStatus.internalError,
                   ResponseStatus.tryLater, ResponseStatus.unauthorized):
        parsed = ocsp.load_der_ocsp_response(error_response(status))
        assert parsed.response_status.value == int(status)
        with pytest.raises(OcspResponseError, match=status.name):
            verify_response(error_response(status), ca=x509.load_der_x509_certificate(
                _responder_ca_der()), cert_id=_dummy_id(), nonce=None, now=NOW)
    with pytest.raises(ValueError):
        error_response(ResponseStatus.successful)


def _responder_ca_der() -> bytes:
    return build_chain(KeyType.ECDSA_P256, NOW).issuing.der


def _dummy_id() -> CertId:
    return CertId("sha1", b"\0" * 20, b"\0" * 20, 1, b"")


def test_openssl_verifies_a_ca_signed_response(openssl: str, tmp_path: Path,
                                               chain_for: Callable[[KeyType], Chain]) -> None:
    chain = chain_for(KeyType.ECDSA_P384)
    cert_id = _cert_id(chain, 0x42)
    data = build_response(chain.issuing.signer, [_answer(cert_id, CertStatus.good)],
                          produced_at=NOW)
    (tmp_path / "resp.der").write_bytes(data)
    (tmp_path / "root.pem").write_bytes(enc.to_pem(chain.root.der, "CERTIFICATE"))
    (tmp_path / "issuing.pem").write_bytes(enc.to_pem(chain.issuing.der, "CERTIFICATE"))
    done = subprocess.run([openssl, "ocsp", "-respin", str(tmp_path / "resp.der"), "-CAfile",
                           str(tmp_path / "root.pem"), "-verify_other",
                           str(tmp_path / "issuing.pem"), "-issuer",
                           str(tmp_path / "issuing.pem"), "-serial", "0x42"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert "Response verify OK" in done.stderr, done.stderr
    assert "0x42: good" in done.stdout
    checked = verify_response(data, ca=chain.issuing.certificate, cert_id=cert_id, nonce=None,
                              now=NOW)
    assert checked.signed_by == "ca"


def test_the_client_refuses_what_it_must_not_trust(
        chain_for: Callable[[KeyType], Chain]) -> None:
    chain = chain_for(KeyType.ECDSA_P256)
    other = chain_for(KeyType.ECDSA_P384)
    signer, responder = _responder(chain)
    cert_id = _cert_id(chain, 7)
    nonce = new_nonce()
    good = build_response(signer, [_answer(cert_id, CertStatus.good)], produced_at=NOW,
                          nonce=nonce, certs=[responder])
    ca = chain.issuing.certificate

    def refused(data: bytes, words: str, **kw: object) -> None:
        args: dict[str, object] = {"ca": ca, "cert_id": cert_id, "nonce": nonce, "now": NOW}
        args.update(kw)
        with pytest.raises(OcspResponseError, match=words):
            verify_response(data, **args)  # type: ignore[arg-type]

    # A flipped bit in the signed data.
    tampered = bytearray(good)
    tampered[good.index(b"\x80\x00")] = 0x82  # good -> unknown
    refused(bytes(tampered), "signature")
    refused(good, "nonce", nonce=new_nonce())
    unnonced = build_response(signer, [_answer(cert_id, CertStatus.good)], produced_at=NOW,
                              certs=[responder])
    refused(unnonced, "echo")
    refused(good, "nextUpdate", now=NOW + timedelta(days=2))
    refused(good, "future", now=NOW - timedelta(minutes=5, seconds=30))
    refused(good, "does not answer", cert_id=_cert_id(chain, 8))
    # A responder certificate from another CA, and a CA key the certificate did not come from.
    foreign_signer, foreign = _responder(other)
    refused(build_response(foreign_signer, [_answer(cert_id, CertStatus.good)], produced_at=NOW,
                           nonce=nonce, certs=[foreign]), "not issued by")
    refused(build_response(other.issuing.signer, [_answer(cert_id, CertStatus.good)],
                           produced_at=NOW, nonce=nonce), "neither")
    # A certificate of the CA without the OCSPSigning extended key usage.
    plain_signer = LocalSigner(KeyType.ECDSA_P256.generate())
    server = issue_server(chain.issuing, spki=enc.spki_der(plain_signer.public_key()),
                          common_name="x", dns_names=("x.example",), ips=(), now=NOW)
    refused(build_response(plain_signer, [_answer(cert_id, CertStatus.good)], produced_at=NOW,
                           nonce=nonce, certs=[server.der]), "OCSPSigning")
    refused(b"\x30\x03\x0a\x01", "truncated|past the end")
    refused(b"\x00" * 10, "DER")
