"""The OCSP request parser: what OpenSSL sends parses, everything malformed is refused with
OcspRequestError (never another exception), within the stated limits."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.errors import OcspRequestError
from iotsec.pki import der
from iotsec.pki import x509 as enc
from iotsec.pki.keys import KeyType
from iotsec.pki.ocsp import MAX_CERT_IDS, MAX_REQUEST_BYTES, CertId, parse_request
from iotsec.pki.ocsp_client import build_request, new_nonce
from tests.pki.support import Chain


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory,
          chain_for: Callable[[KeyType], Chain]) -> tuple[Path, Chain, int]:
    chain = chain_for(KeyType.ECDSA_P256)
    directory = tmp_path_factory.mktemp("ocspreq")
    (directory / "issuer.pem").write_bytes(enc.to_pem(chain.issuing.der, "CERTIFICATE"))
    return directory, chain, 0x1234ABCD


def _openssl_request(openssl: str, directory: Path, serial: int, *extra: str) -> bytes:
    out = directory / "req.der"
    # A digest option applies to the -serial options after it.
    subprocess.run([openssl, "ocsp", *extra, "-issuer", str(directory / "issuer.pem"),
                    "-serial", hex(serial), "-reqout", str(out)], check=True,
                   capture_output=True, timeout=30)
    return out.read_bytes()


def _ids(chain: Chain, hash_name: str) -> tuple[bytes, bytes]:
    cert = x509.load_der_x509_certificate(chain.issuing.der)
    probe = CertId.for_certificate(cert.subject.public_bytes(),
                                   enc.spki_der(cert.public_key()), 1, hash_name)
    return probe.issuer_name_hash, probe.issuer_key_hash


@pytest.mark.parametrize(("options", "hash_name"), [
    ((), "sha1"), (("-no_nonce",), "sha1"), (("-sha256",), "sha256"),
    (("-sha256", "-no_nonce"), "sha256")])
def test_openssl_requests_parse(openssl: str, files: tuple[Path, Chain, int],
                                options: tuple[str, ...], hash_name: str) -> None:
    directory, chain, serial = files
    request = parse_request(_openssl_request(openssl, directory, serial, *options))
    (cert_id,) = request.cert_ids
    assert cert_id.serial == serial and cert_id.hash_name == hash_name
    assert (cert_id.issuer_name_hash, cert_id.issuer_key_hash) == _ids(chain, hash_name)
    if "-no_nonce" in options:
        assert request.nonce is None
    else:
        # OpenSSL's nonce: an OCSP extension value that is an OCTET STRING of 16 octets.
        assert request.nonce is not None and request.nonce[:2] == b"\x04\x10"


def test_our_request_round_trips(files: tuple[Path, Chain, int]) -> None:
    _, chain, serial = files
    cert = x509.load_der_x509_certificate(chain.issuing.der)
    cert_id = CertId.for_certificate(cert.subject.public_bytes(),
                                     enc.spki_der(cert.public_key()), serial, "sha256")
    nonce = new_nonce()
    parsed = parse_request(build_request(cert_id, nonce))
    assert parsed.cert_ids == (cert_id,) and parsed.nonce == nonce


def _request(*cert_ids: bytes, extensions: bytes | None = None) -> bytes:
    tbs = [der.sequence(*(der.sequence(c) for c in cert_ids))]
    if extensions is not None:
        tbs.append(der.explicit(2, extensions))
    return der.sequence(der.sequence(*tbs))


def _cert_id(alg: str = "1.3.14.3.2.26", size: int = 20, serial: int = 5) -> bytes:
    return der.sequence(der.sequence(der.oid(alg), der.null()), der.octet_string(b"\1" * size),
                        der.octet_string(b"\2" * size), der.integer(serial))


def _nonce_ext(value: bytes, *, critical: bool = False) -> bytes:
    return der.sequence(enc.extension("1.3.6.1.5.5.7.48.1.2", value, critical=critical))


@pytest.mark.parametrize(("data", "words"), [
    (b"", "truncated"),
    (b"\x30\x00", "OCSPRequest"),
    (b"\x30\x03\x02\x01\x00", "OCSPRequest"),
    (_request(_cert_id()) + b"\x00", "after"),
    (_request(), "no certificate"),
    (_request(*[_cert_id()] * (MAX_CERT_IDS + 1)), "at most"),
    (_request(_cert_id(alg="1.2.840.113549.2.5", size=16)), "not supported"),
    (_request(_cert_id(size=19)), "octets"),
    (_request(_cert_id(serial=0)), "positive"),
    (_request(_cert_id(serial=-3)), "positive"),
    (_request(_cert_id(), extensions=_nonce_ext(der.octet_string(b"n" * 33))), "nonce"),
    (_request(_cert_id(), extensions=_nonce_ext(der.octet_string(b""))), "nonce"),
    (_request(_cert_id(), extensions=der.sequence(enc.extension("1.2.3.4", b"\x05\x00",
                                                                critical=True))), "critical"),
    (b"\x30\x84\x7f\xff\xff\xff", "past the end"),
    (b"\x30\x81\x05" + b"\x00" * 5, "non-minimal"),
])
def test_malformed_requests_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(OcspRequestError) as caught:
        parse_request(data)
    assert words in str(caught.value)


def test_oversized_request_is_refused_before_parsing() -> None:
    with pytest.raises(OcspRequestError, match="at most"):
        parse_request(b"\x30" + b"\x00" * MAX_REQUEST_BYTES)


def test_a_nonce_of_32_octets_is_echoed_verbatim() -> None:
    value = der.octet_string(b"n" * 32)
    assert parse_request(_request(_cert_id(), extensions=_nonce_ext(value))).nonce == value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _parse_or_refuse(data)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_requests(data: st.DataObject) -> None:
    base = bytearray(_request(_cert_id(serial=0x1234567890),
                              extensions=_nonce_ext(der.octet_string(b"x" * 16))))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    _parse_or_refuse(bytes(base[:cut]))


def _parse_or_refuse(data: bytes) -> None:
    """Either a request within the limits, or OcspRequestError: any other exception fails."""
    try:
        parsed = parse_request(data)
    except OcspRequestError:
        return
    assert 1 <= len(parsed.cert_ids) <= MAX_CERT_IDS
    for cert_id in parsed.cert_ids:
        assert cert_id.serial > 0 and cert_id.der in data
