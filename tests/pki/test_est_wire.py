"""EST wire formats (iotsec.pki.est): base64 bodies, certs-only PKCS#7, CsrAttrs and the
serverkeygen multipart, each read back by openssl or Python's email parser, and the
readers fuzzed: any input is either decoded or refused with an InvalidInputError."""

from __future__ import annotations

import base64
import email
import email.policy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from iotsec.errors import InputTooLargeError, InvalidInputError, MalformedInputError
from iotsec.pki import der
from iotsec.pki.est import (
    CONTENT_PKCS7_CERTS,
    CONTENT_PKCS8,
    MAX_CERTS,
    MAX_CERTS_ONLY_BYTES,
    MAX_EST_BODY,
    certs_only,
    csr_attributes,
    decode_base64_body,
    encode_base64_body,
    read_certs_only,
    serverkeygen_body,
)
from iotsec.pki.keys import KeyType
from tests.helpers import make_key, self_signed
from tests.pki.support import Chain, issue_leaf, run_openssl

FUZZ = hsettings(max_examples=300, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
T = TypeVar("T")
OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"


@pytest.fixture(scope="module")
def certs(p256_chain: Chain) -> list[x509.Certificate]:
    """A device certificate and its issuing and root CA certificates."""
    leaf = issue_leaf(p256_chain.issuing, "dev-est", p256_chain.now)
    return [x509.load_der_x509_certificate(leaf.der), p256_chain.issuing.certificate,
            p256_chain.root.certificate]


def _pems(certs: list[x509.Certificate]) -> set[bytes]:
    return {c.public_bytes(serialization.Encoding.PEM) for c in certs}


def _signed_data(cert_ders: list[bytes] | None, *, signers: bytes = b"",
                 encap: str = OID_DATA, trailing: bytes = b"") -> bytes:
    """A SignedData built by hand, to make the variants a reader must refuse."""
    body = der.integer(1) + der.set_of() + der.sequence(der.oid(encap))
    if cert_ders is not None:
        body += der.tlv(0xA0, b"".join(cert_ders))
    body += der.tlv(der.SET, signers)
    return der.sequence(der.oid(OID_SIGNED_DATA), der.explicit(0, der.sequence(body))) + trailing


def _decoded_or_refused(read: Callable[[bytes], T], data: bytes) -> T | None:
    """What ``read`` makes of ``data``, or None when it refused it the way readers must:
    an InvalidInputError with a message, answered 400 or 413."""
    refused: InvalidInputError | None = None
    try:
        return read(data)
    except InvalidInputError as exc:
        refused = exc
    assert str(refused) and refused.status in (400, 413)
    return None


# --- base64 bodies -----------------------------------------------------------------------


def test_base64_bodies_round_trip_with_any_white_space() -> None:
    data = bytes(range(256)) * 3
    encoded = encode_base64_body(data)
    lines = encoded.split(b"\n")
    assert lines[-1] == b"" and all(0 < len(x) <= 64 for x in lines[:-1])
    assert decode_base64_body(encoded) == data
    assert decode_base64_body(encoded.replace(b"\n", b"\r\n")) == data
    spaced = b" \t".join(encoded[i:i + 7] for i in range(0, len(encoded), 7))
    assert decode_base64_body(b"\r\n" + spaced + b"\r\n\r\n") == data


def test_openssl_decodes_what_is_encoded(openssl: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5
    (tmp_path / "b64").write_bytes(encode_base64_body(data))
    out = subprocess.run([openssl, "base64", "-d", "-in", str(tmp_path / "b64")],
                         capture_output=True, timeout=30, check=True)
    assert out.stdout == data


@pytest.mark.parametrize(("body", "expected"), [
    (b"", "empty"),
    (b" \r\n\t", "empty"),
    (b"QUJD", None),
    (b"QUI", "multiple of 4"),
    (b"QUI=QUI=", "not base64"),
    (b"QU=I", "not base64"),
    (b"QUJ*", "not base64"),
    (b"-----BEGIN CERTIFICATE REQUEST-----", "not base64"),
    (b"\x00\x01\x02\x03", "not base64"),
    ("QUJD\u00e9QUJD".encode(), "not base64"),
    (b"====", "not base64"),
])
def test_base64_bodies_refused_with_a_clear_error(body: bytes, expected: str | None) -> None:
    if expected is None:
        assert decode_base64_body(body) == b"ABC"
        return
    with pytest.raises(MalformedInputError, match=expected) as info:
        decode_base64_body(body)
    assert info.value.status == 400 and info.value.hint


def test_base64_body_over_the_limit_is_refused_before_decoding() -> None:
    body = base64.b64encode(b"\x30" * MAX_EST_BODY)[:MAX_EST_BODY + 4]
    with pytest.raises(InputTooLargeError, match="limit is 65536") as info:
        decode_base64_body(body)
    assert info.value.status == 413
    assert decode_base64_body(b"QUJD" * (MAX_EST_BODY // 4)) == b"ABC" * (MAX_EST_BODY // 4)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_decode_base64_body_decodes_or_refuses(body: bytes) -> None:
    decoded = _decoded_or_refused(decode_base64_body, body)
    if decoded is None:
        return
    assert decoded and base64.b64decode(body.translate(None, b" \t\r\n\x0b\x0c")) == decoded


@FUZZ
@given(st.binary(min_size=1, max_size=512),
       st.lists(st.tuples(st.integers(0, 1000), st.sampled_from([b" ", b"\r\n", b"\t", b"\n"])),
                max_size=20))
def test_fuzz_white_space_anywhere_is_tolerated(data: bytes,
                                                 gaps: list[tuple[int, bytes]]) -> None:
    encoded = bytearray(base64.b64encode(data))
    for where, blank in sorted(gaps, reverse=True):
        encoded[min(where, len(encoded)):min(where, len(encoded))] = blank
    assert decode_base64_body(bytes(encoded)) == data


# --- certs-only PKCS#7 -------------------------------------------------------------------


def test_certs_only_round_trips_and_openssl_prints_every_certificate(
        certs: list[x509.Certificate], openssl: str, tmp_path: Path) -> None:
    message = certs_only(certs)
    assert _pems(read_certs_only(message)) == _pems(certs)
    path = tmp_path / "certs.p7"
    path.write_bytes(message)
    out = run_openssl(openssl, "pkcs7", "-inform", "DER", "-in", path, "-print_certs")
    assert out.returncode == 0, out.stderr
    printed = x509.load_pem_x509_certificates(out.stdout.encode())
    assert _pems(printed) == _pems(certs)
    # The base64 body as served: openssl reads it after its own base64 decoding.
    (tmp_path / "certs.b64").write_bytes(encode_base64_body(message))
    decoded = subprocess.run([openssl, "base64", "-d", "-in", str(tmp_path / "certs.b64")],
                             capture_output=True, timeout=30, check=True).stdout
    assert decoded == message


def test_read_certs_only_reads_what_openssl_writes(certs: list[x509.Certificate],
                                                   openssl: str, tmp_path: Path) -> None:
    pem = tmp_path / "chain.pem"
    pem.write_bytes(b"".join(sorted(_pems(certs))))
    out = tmp_path / "chain.p7"
    done = run_openssl(openssl, "crl2pkcs7", "-nocrl", "-certfile", pem, "-outform", "DER",
                       "-out", out)
    assert done.returncode == 0, done.stderr
    assert _pems(read_certs_only(out.read_bytes())) == _pems(certs)


def test_read_certs_only_refusals(certs: list[x509.Certificate]) -> None:
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    good = _signed_data(ders)
    assert len(read_certs_only(good)) == 3
    key = make_key()
    signer = self_signed(key, "signer", not_before=certs[0].not_valid_before_utc,
                         not_after=certs[0].not_valid_after_utc)
    signed = (pkcs7.PKCS7SignatureBuilder().set_data(b"hello")
              .add_signer(signer, key, hashes.SHA256())  # type: ignore[arg-type]
              .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.NoCapabilities]))
    one = ders[:1]
    cases: list[tuple[bytes, type[InvalidInputError], str]] = [
        (good + b"\x00", MalformedInputError, "bytes follow"),
        (_signed_data(ders, trailing=b"\x05\x00"), MalformedInputError, "bytes follow"),
        (_signed_data(None), MalformedInputError, "no certificate"),
        (_signed_data([]), MalformedInputError, "no certificate"),
        (_signed_data(one, signers=der.sequence(der.integer(1))), MalformedInputError,
         "signatures"),
        (signed, MalformedInputError, "PKCS#7"),
        (_signed_data(one, encap="1.2.840.113549.1.7.3"), MalformedInputError,
         "encapsulated content type"),
        (der.sequence(der.oid(OID_DATA), der.explicit(0, der.octet_string(b"x"))),
         MalformedInputError, "content type"),
        (_signed_data([ders[0][:4] + b"\x31" + ders[0][5:]]), MalformedInputError,
         "certificate 1"),
        (_signed_data([der.sequence(der.integer(1))]), MalformedInputError, "certificate 1"),
        (_signed_data(one * (MAX_CERTS + 1)), MalformedInputError, f"more than {MAX_CERTS}"),
        (good[:-1], MalformedInputError, "past the end"),
        (b"", MalformedInputError, "truncated"),
        (b"\x30\x80\x00\x00", MalformedInputError, "length"),
        (b"\x30" + b"\x84" + (MAX_CERTS_ONLY_BYTES + 1).to_bytes(4, "big")
         + b"\x00" * MAX_CERTS_ONLY_BYTES, InputTooLargeError, "limit"),
    ]
    for i, (data, kind, message) in enumerate(cases):
        with pytest.raises(kind, match=message):
            read_certs_only(data)
            raise AssertionError(f"case {i} was read")
    assert len(read_certs_only(_signed_data(one * MAX_CERTS))) == MAX_CERTS


def _mutations() -> st.SearchStrategy[Callable[[bytes], bytes]]:
    def flip(at: int, value: int) -> Callable[[bytes], bytes]:
        return lambda b: b[:at % len(b)] + bytes((value,)) + b[at % len(b) + 1:]

    def cut(at: int) -> Callable[[bytes], bytes]:
        return lambda b: b[:at % len(b)]

    def insert(at: int, extra: bytes) -> Callable[[bytes], bytes]:
        return lambda b: b[:at % len(b)] + extra + b[at % len(b):]

    return st.one_of(
        st.builds(flip, st.integers(0, 4000), st.integers(0, 255)),
        st.builds(cut, st.integers(0, 4000)),
        st.builds(insert, st.integers(0, 4000), st.binary(min_size=1, max_size=8)))


@FUZZ
@given(st.lists(_mutations(), min_size=1, max_size=4))
def test_fuzz_read_certs_only_mutated(certs: list[x509.Certificate],
                                      mutations: list[Callable[[bytes], bytes]]) -> None:
    data = certs_only(certs)
    for mutate in mutations:
        data = mutate(data) or b"\x30"
    found = _decoded_or_refused(read_certs_only, data)
    assert found is None or 1 <= len(found) <= MAX_CERTS


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_read_certs_only_random(data: bytes) -> None:
    # Random bytes are never a valid message.
    assert _decoded_or_refused(read_certs_only, data) is None


# --- CSR attributes ------------------------------------------------------------------------


@pytest.mark.parametrize(("key_type", "names"), [
    (KeyType.ECDSA_P256, ["id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256"]),
    (KeyType.ECDSA_P384, ["id-ecPublicKey", "secp384r1", "ecdsa-with-SHA384"]),
    (KeyType.RSA_3072, ["rsaEncryption", "sha256WithRSAEncryption"]),
])
def test_csr_attributes_parse_with_openssl(key_type: KeyType, names: list[str], openssl: str,
                                           tmp_path: Path) -> None:
    path = tmp_path / "attrs.der"
    for cn, serial in ((False, False), (True, False), (False, True), (True, True)):
        path.write_bytes(csr_attributes(key_type=key_type, require_cn=cn,
                                        require_serial_number=serial))
        out = run_openssl(openssl, "asn1parse", "-inform", "DER", "-in", path)
        assert out.returncode == 0, out.stderr
        for name in names:
            assert f":{name}" in out.stdout, out.stdout
        assert (":commonName" in out.stdout) is cn
        assert (":serialNumber" in out.stdout) is serial
        # One SEQUENCE that spans the file: nothing before, nothing after.
        assert out.stdout.splitlines()[0].startswith("    0:d=0")
        assert "cons: SEQUENCE" in out.stdout.splitlines()[0]
    if key_type is KeyType.RSA_3072:
        assert ":0C00" in out.stdout  # the key size, 3072


# --- serverkeygen multipart ----------------------------------------------------------------


def test_serverkeygen_body_splits_with_the_email_parser_and_openssl_reads_each_part(
        p256_chain: Chain, openssl: str, tmp_path: Path) -> None:
    key = make_key()
    leaf = issue_leaf(p256_chain.issuing, "dev-keygen", p256_chain.now, key=key)
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    message = certs_only([x509.load_der_x509_certificate(leaf.der)])
    content_type, body = serverkeygen_body(key_der, message)
    assert content_type.startswith("multipart/mixed; boundary=")
    parsed = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
                                      + body, policy=email.policy.default)
    assert parsed.is_multipart() and not parsed.defects
    parts = list(parsed.iter_parts())  # type: ignore[attr-defined]
    assert [p.get_content_type() for p in parts] == ["application/pkcs8",
                                                     "application/pkcs7-mime"]
    assert parts[0]["Content-Type"] == CONTENT_PKCS8
    assert parts[1].get_param("smime-type") == "certs-only"
    assert CONTENT_PKCS7_CERTS.encode() in body
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts)
    (tmp_path / "key.der").write_bytes(parts[0].get_content())
    (tmp_path / "cert.p7").write_bytes(parts[1].get_content())
    assert parts[0].get_content() == key_der and parts[1].get_content() == message
    pkey = run_openssl(openssl, "pkey", "-inform", "DER", "-in", tmp_path / "key.der",
                       "-pubout")
    assert pkey.returncode == 0, pkey.stderr
    printed = run_openssl(openssl, "pkcs7", "-inform", "DER", "-in", tmp_path / "cert.p7",
                          "-print_certs")
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "cert.pem").write_text(printed.stdout)
    cert_pub = run_openssl(openssl, "x509", "-in", tmp_path / "cert.pem", "-noout", "-pubkey")
    assert cert_pub.returncode == 0, cert_pub.stderr
    assert cert_pub.stdout == pkey.stdout  # the key is the certificate's key
