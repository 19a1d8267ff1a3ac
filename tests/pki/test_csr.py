"""CSR parsing: good requests in PEM and DER, and every kind of bad input refused precisely."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iotsec.errors import (
    CsrError,
    InputTooLargeError,
    IotsecError,
    MalformedInputError,
    WeakKeyError,
)
from iotsec.pki import csr as csr_module
from iotsec.pki import der as enc
from iotsec.pki.csr import MAX_CSR_BYTES, parse_csr
from iotsec.pki.x509 import spki_der
from tests.helpers import make_csr, make_key
from tests.pki.asn1 import children, read_one, read_tlv

_P256_KEY = make_key("p256")
VALID_DER = make_csr(_P256_KEY, cn="requested-name", der=True)
VALID_PEM = make_csr(_P256_KEY, cn="requested-name")


def _with_version(der: bytes, version: int) -> bytes:
    """``der`` with the CertificationRequestInfo's version INTEGER set to ``version``."""
    _, outer = read_one(der)
    _, cri, _ = read_tlv(outer)
    assert cri[:3] == b"\x02\x01\x00"
    # The version is the first element of the first element: skip the two headers.
    offset = (len(der) - len(outer)) + (len(outer) - len(cri) - _trailing(outer))
    assert der[offset : offset + 3] == b"\x02\x01\x00"
    return der[: offset + 2] + bytes((version,)) + der[offset + 3 :]


def _trailing(outer: bytes) -> int:
    """Octets after the first TLV inside ``outer``."""
    return len(outer) - read_tlv(outer)[2]


VERSION_1_DER = _with_version(VALID_DER, 1)


def _csr_with(key, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "weak")]))
        .sign(key, algorithm)
        .public_bytes(serialization.Encoding.DER)
    )


def _pem(der: bytes, label: str = "CERTIFICATE REQUEST") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join([f"-----BEGIN {label}-----".encode(), *lines,
                       f"-----END {label}-----".encode(), b""])


# --- good input ------------------------------------------------------------------------


@pytest.mark.parametrize("data", [VALID_DER, VALID_PEM, b"\n\n  " + VALID_PEM,
                                  VALID_PEM.replace(b"\n", b"\r\n")],
                         ids=["der", "pem", "pem-leading-space", "pem-crlf"])
def test_accepts_der_and_pem(data: bytes) -> None:
    checked = parse_csr(data)
    assert checked.spki == spki_der(_P256_KEY.public_key())
    assert checked.requested_subject == "CN=requested-name"


@pytest.mark.parametrize("kind", ["p384", "rsa2048"])
def test_accepts_strong_keys(kind: str) -> None:
    key = make_key(kind)
    assert parse_csr(make_csr(key)).spki == spki_der(key.public_key())


def test_accepts_p521_and_ed25519() -> None:
    for key, alg in ((ec.generate_private_key(ec.SECP521R1()), hashes.SHA512()),
                     (ed25519.Ed25519PrivateKey.generate(), None)):
        assert parse_csr(_csr_with(key, alg)).spki == spki_der(key.public_key())


def test_limit_is_inclusive() -> None:
    padded = VALID_PEM + b"\n" * (MAX_CSR_BYTES - len(VALID_PEM))
    assert len(padded) == MAX_CSR_BYTES
    assert parse_csr(padded).spki == spki_der(_P256_KEY.public_key())


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b" \n\t\r\n", "empty"),
        (b"\x00\x01garbage\xff\xfe", "not a valid"),
        (b"hello world", "not a valid"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\n!!!not base64!!!\n"
         b"-----END CERTIFICATE REQUEST-----\n", "not a valid"),
        (b"-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
         "not a valid"),
        (VALID_PEM[: len(VALID_PEM) // 2], "not a valid"),
        (VALID_PEM.replace(b"-----END CERTIFICATE REQUEST-----\n", b""), "not a valid"),
        (VALID_DER[:-7], "not a valid"),
        (VALID_DER[:2], "not a valid"),
        (VALID_DER + b"\x00", "not a valid"),
        (VALID_PEM.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"), "not a valid"),
        (_pem(b"\x30\x03\x02\x01\x01"), "not a valid"),
    ],
    ids=[
        "empty", "whitespace", "binary-garbage", "text-garbage", "garbage-pem-body",
        "empty-pem-body", "truncated-pem", "pem-without-end", "truncated-der", "der-header-only",
        "der-trailing-byte", "wrong-pem-label", "pem-of-non-csr",
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(MalformedInputError) as info:
        parse_csr(data)
    assert message in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize("size", [MAX_CSR_BYTES + 1, 10 * MAX_CSR_BYTES])
def test_oversized_is_refused_before_parsing(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_parse(*_args: object) -> None:
        raise AssertionError("parsed input over the size limit")

    monkeypatch.setattr(csr_module.x509, "load_pem_x509_csr", must_not_parse)
    monkeypatch.setattr(csr_module.x509, "load_der_x509_csr", must_not_parse)
    for data in (VALID_PEM + b"\n" * (size - len(VALID_PEM)), b"\x30" * size):
        with pytest.raises(InputTooLargeError) as info:
            parse_csr(data)
        assert str(size) in str(info.value)
        assert str(MAX_CSR_BYTES) in str(info.value)


def _signature_bits(der_csr: bytes) -> tuple[int, int]:
    """Offset and length of the signature BIT STRING's content in a DER CSR."""
    _, content = read_one(der_csr)
    parts = children(content)
    assert parts[2][0] == 0x03
    sig_len = len(parts[2][1])
    return len(der_csr) - sig_len, sig_len


def test_flipped_signature_byte_is_refused() -> None:
    offset, length = _signature_bits(VALID_DER)
    # The last octet of ECDSA's s: the structure stays valid, the signature does not.
    forged = bytearray(VALID_DER)
    forged[offset + length - 1] ^= 0x01
    with pytest.raises(CsrError) as info:
        parse_csr(bytes(forged))
    assert type(info.value) is CsrError
    assert "signature does not verify" in str(info.value)


def test_flipped_byte_in_the_signed_part_is_refused() -> None:
    # Change the requested CN ("requested-name" -> "requested-nbme"): same length, new hash.
    forged = VALID_DER.replace(b"requested-name", b"requested-nbme")
    assert forged != VALID_DER
    with pytest.raises(CsrError, match="signature does not verify"):
        parse_csr(forged)


def test_spliced_public_key_is_refused() -> None:
    other = make_key("p256")
    own_spki = spki_der(_P256_KEY.public_key())
    other_spki = spki_der(other.public_key())
    assert len(own_spki) == len(other_spki)
    spliced = VALID_DER.replace(own_spki, other_spki)
    assert spliced != VALID_DER
    with pytest.raises(CsrError, match="signature does not verify") as info:
        parse_csr(spliced)
    assert not isinstance(info.value, WeakKeyError)
    # PEM goes through the same check.
    with pytest.raises(CsrError, match="signature does not verify"):
        parse_csr(_pem(spliced))


def test_rsa_1024_is_weak() -> None:
    with pytest.raises(WeakKeyError, match="1024 bits") as info:
        parse_csr(make_csr(make_key("rsa1024")))
    assert "2048" in str(info.value)


@pytest.mark.parametrize("curve", [ec.SECP192R1(), ec.SECP224R1(), ec.SECP256K1()],
                         ids=lambda c: c.name)
def test_weak_or_unlisted_curves(curve: ec.EllipticCurve) -> None:
    try:
        key = ec.generate_private_key(curve)
    except UnsupportedAlgorithm as exc:  # depends on the OpenSSL build
        pytest.skip(f"{curve.name} unavailable: {exc}")
    with pytest.raises(WeakKeyError) as info:
        parse_csr(_csr_with(key, hashes.SHA256()))
    assert curve.name in str(info.value)


def test_unsupported_key_type_is_refused() -> None:
    with pytest.raises(WeakKeyError, match="key type"):
        parse_csr(_csr_with(ed448.Ed448PrivateKey.generate()))


@pytest.mark.parametrize("version", [1, 2, 127])
@pytest.mark.parametrize("encoding", ["der", "pem"])
def test_wrong_csr_version_is_malformed(version: int, encoding: str) -> None:
    data = _with_version(VALID_DER, version)
    with pytest.raises(MalformedInputError, match="not a valid"):
        parse_csr(data if encoding == "der" else _pem(data))


def test_messages_do_not_echo_input() -> None:
    secret = b"S3CRET-MARKER-" * 4
    for data in (secret, b"-----BEGIN CERTIFICATE REQUEST-----\n" + secret):
        with pytest.raises(MalformedInputError) as info:
            parse_csr(data)
        assert "S3CRET" not in str(info.value)


# --- fuzzing ---------------------------------------------------------------------------


def _assert_only_iotsec_errors(data: bytes) -> None:
    # Anything but an IotsecError propagates and fails the test.
    try:
        parse_csr(data)
    except IotsecError as exc:
        message = str(exc)
    else:
        return
    assert message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _assert_only_iotsec_errors(data)


@st.composite
def _mutated(draw: st.DrawFn, seed: bytes, start: int = 0) -> bytes:
    """``seed`` with a few random edits, none of them before offset ``start``."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(min(start, len(data)), max(len(data) - 1, start)))
        if action in ("flip", "set", "delete") and pos >= len(data):
            continue
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x80, 0x81, 0x82, 0xFF, 0x30, 0x7F]))
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[pos:]
    return bytes(data)


_RSA_DER = make_csr(make_key("rsa2048"), der=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([VALID_DER, _RSA_DER]).flatmap(_mutated))
@example(VERSION_1_DER)
def test_fuzz_mutated_der(data: bytes) -> None:
    _assert_only_iotsec_errors(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([VALID_DER, _RSA_DER]).flatmap(_mutated))
@example(VERSION_1_DER)
def test_fuzz_mutated_pem(der: bytes) -> None:
    # Mutate inside the base64 body, so the PEM armour does not hide the DER parser.
    _assert_only_iotsec_errors(_pem(der))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([VALID_PEM]).flatmap(_mutated))
@example(_pem(VERSION_1_DER))
def test_fuzz_mutated_pem_text(data: bytes) -> None:
    _assert_only_iotsec_errors(data)


# The CertificationRequestInfo version ends at offset 8 of both seeds (two 2- or 4-octet
# headers, then 02 01 00): edits after it keep the version, so this guard stays live
# while the version bug above is open.
_AFTER_VERSION = {VALID_DER: 8, _RSA_DER: 11}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([VALID_DER, _RSA_DER]).flatmap(lambda d: _mutated(d, _AFTER_VERSION[d])))
def test_fuzz_mutated_der_after_the_version(data: bytes) -> None:
    _assert_only_iotsec_errors(data)


def test_after_version_offsets() -> None:
    for seed, offset in _AFTER_VERSION.items():
        assert seed[offset - 3 : offset] == b"\x02\x01\x00"
        assert _with_version(seed, 1)[offset - 1] == 1


# --- the signature check against cryptography's own -------------------------------------

_SIGNERS = {
    "p256": _P256_KEY, "p384": make_key("p384"), "p521": ec.generate_private_key(ec.SECP521R1()),
    "rsa2048": make_key("rsa2048"), "ed25519": ed25519.Ed25519PrivateKey.generate(),
}
_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
_ECDSA_OIDS = [x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256.dotted_string,
               x509.SignatureAlgorithmOID.ECDSA_WITH_SHA384.dotted_string,
               x509.SignatureAlgorithmOID.ECDSA_WITH_SHA512.dotted_string]
_RSA_OID = x509.SignatureAlgorithmOID.RSA_WITH_SHA256.dotted_string


def _relabelled(csr_der: bytes, dotted: str) -> bytes:
    """``csr_der`` with its signature algorithm replaced by ``dotted`` (no parameters for
    ECDSA, NULL for RSA), the outer lengths made right: the signature no longer fits it."""
    _, content = read_one(csr_der)
    (_, info), _, (_, signature) = children(content)
    algorithm = enc.sequence(enc.oid(dotted), *([enc.null()] if dotted == _RSA_OID else []))
    return enc.sequence(enc.sequence(info), algorithm, enc.tlv(enc.BIT_STRING, signature))


def _signed(kind: str, digest: str) -> bytes:
    key = _SIGNERS[kind]
    algorithm = None if kind == "ed25519" else _HASHES[digest]
    return _csr_with(key, algorithm)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(_SIGNERS)), digest=st.sampled_from(sorted(_HASHES)),
       position=st.integers(min_value=-1, max_value=600), flip=st.integers(1, 255),
       relabel=st.sampled_from([None, *_ECDSA_OIDS, _RSA_OID]))
@example(kind="p256", digest="sha256", position=-1, flip=1, relabel=None)
@example(kind="p384", digest="sha512", position=-1, flip=1, relabel=None)
@example(kind="p256", digest="sha256", position=-1, flip=1, relabel=_ECDSA_OIDS[1])
@example(kind="rsa2048", digest="sha256", position=-1, flip=1, relabel=_ECDSA_OIDS[0])
@example(kind="p256", digest="sha256", position=-1, flip=1, relabel=_RSA_OID)
def test_signature_check_agrees_with_cryptography(kind: str, digest: str, position: int,
                                                   flip: int, relabel: str | None) -> None:
    """The check that parse_csr makes answers as ``is_signature_valid`` does, for every key
    type and digest, for a byte changed anywhere (position -1: none), and for a CSR whose
    signature algorithm was relabelled to one that does not match how it was signed."""
    der = _signed(kind, digest)
    if relabel is not None:
        der = _relabelled(der, relabel)
    if 0 <= position < len(der):
        changed = bytearray(der)
        changed[position] ^= flip
        der = bytes(changed)
    try:
        request = x509.load_der_x509_csr(der)
        public_key = request.public_key()
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
        # What the reference cannot parse, parse_csr refuses.
        with pytest.raises(IotsecError):
            parse_csr(der)
        return
    try:
        expected = request.is_signature_valid
    except Exception as exc:  # a pairing the reference cannot check
        # The check refuses it as the reference does, and so does parse_csr.
        with pytest.raises(type(exc)):
            csr_module._signature_ok(request, public_key)
        with pytest.raises(IotsecError):
            parse_csr(der)
        return
    assert csr_module._signature_ok(request, public_key) is expected
    if expected:
        refused = None
        try:
            parse_csr(der)
        except IotsecError as exc:  # a subject or a key refused for what it is
            refused = str(exc)
        assert refused is None or "signature does not verify" not in refused
    else:
        with pytest.raises(IotsecError):
            parse_csr(der)
