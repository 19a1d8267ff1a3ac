"""The DER encoder, checked against known encodings and independent parsers/encoders."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from iotsec.pki import der
from iotsec.pki import x509 as enc
from tests.helpers import make_key, self_signed
from tests.pki.asn1 import DerError, children, decode_integer, read_one, read_tlv
from tests.pki.support import run_openssl

# --- INTEGER ---------------------------------------------------------------------------

INTEGER_VECTORS = [
    (0, "020100"),
    (1, "020101"),
    (127, "02017f"),
    (128, "02020080"),
    (255, "020200ff"),
    (256, "02020100"),
    (32767, "02027fff"),
    (32768, "0203008000"),
    (-1, "0201ff"),
    (-128, "020180"),
    (-129, "0202ff7f"),
    (-256, "0202ff00"),
    (-32768, "02028000"),
    (-32769, "0203ff7fff"),
    (2**159, "021500" + "80" + "00" * 19),
    (2**159 - 1, "0214" + "7f" + "ff" * 19),
    (-(2**159), "0214" + "80" + "00" * 19),
]


@pytest.mark.parametrize(("value", "expected"), INTEGER_VECTORS)
def test_integer_known_encodings(value: int, expected: str) -> None:
    assert der.integer(value).hex() == expected


def test_integers_parse_back_with_openssl(openssl: str, tmp_path) -> None:
    values = [v for v, _ in INTEGER_VECTORS]
    path = tmp_path / "ints.der"
    path.write_bytes(der.sequence(*(der.integer(v) for v in values)))
    out = run_openssl(openssl, "asn1parse", "-inform", "DER", "-in", path)
    assert out.returncode == 0, out.stderr
    parsed = []
    for line in out.stdout.splitlines():
        match = re.search(r"prim: INTEGER\s+:(-?)([0-9A-F]+)\s*$", line)
        if match:
            magnitude = int(match.group(2), 16)
            parsed.append(-magnitude if match.group(1) else magnitude)
    assert parsed == values


def test_the_test_decoder_refuses_non_minimal_integers() -> None:
    # The round-trip property below only means something if the decoder is strict.
    for bad in ("02020001", "0202ff80", "0200", "020300007f"):
        with pytest.raises(DerError):
            decode_integer(bytes.fromhex(bad))
    assert decode_integer(bytes.fromhex("02020080")) == 128


@settings(max_examples=500, deadline=None)
@given(st.integers() | st.integers(min_value=-(2**2000), max_value=2**2000))
def test_integer_round_trips_minimally(value: int) -> None:
    encoded = der.integer(value)
    assert decode_integer(encoded) == value
    tag, content = read_one(encoded)
    assert tag == der.INTEGER
    # Minimal: the fewest octets that hold the value in two's complement.
    magnitude_bits = value.bit_length() if value >= 0 else (-value - 1).bit_length()
    assert len(content) == magnitude_bits // 8 + 1


# --- lengths and TLVs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8180"),
        (255, "81ff"),
        (256, "820100"),
        (65535, "82ffff"),
        (65536, "83010000"),
        (2**24, "8401000000"),
    ],
)
def test_length_short_and_long_forms(n: int, expected: str) -> None:
    assert der.length(n).hex() == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_length_is_minimal_and_decodes(n: int) -> None:
    encoded = der.length(n)
    if n < 0x80:
        assert encoded == bytes((n,))
    else:
        count = encoded[0] & 0x7F
        assert encoded[0] & 0x80
        assert count == len(encoded) - 1
        assert encoded[1] != 0
        assert int.from_bytes(encoded[1:], "big") == n


@pytest.mark.parametrize("size", [0, 1, 127, 128, 200, 255, 256, 70_000])
def test_tlv_lengths_parse_back(size: int, openssl: str, tmp_path) -> None:
    encoded = der.octet_string(b"\xaa" * size)
    tag, content = read_one(encoded)
    assert (tag, len(content)) == (der.OCTET_STRING, size)
    path = tmp_path / "os.der"
    path.write_bytes(encoded)
    out = run_openssl(openssl, "asn1parse", "-inform", "DER", "-in", path)
    assert out.returncode == 0, out.stderr
    assert re.search(rf"l=\s*{size} prim: OCTET STRING", out.stdout), out.stdout


# --- simple types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (der.boolean(True), "0101ff"),
        (der.boolean(False), "010100"),
        (der.null(), "0500"),
        (der.octet_string(b""), "0400"),
        (der.octet_string(b"\x01\x02"), "04020102"),
        (der.bit_string(b"\xc0", 6), "030206c0"),
        (der.bit_string(b""), "030100"),
        (der.enumerated(0), "0a0100"),
        (der.enumerated(1), "0a0101"),
        (der.enumerated(10), "0a010a"),
        (der.enumerated(200), "0a0200c8"),
        (der.utf8_string("dev-1"), "0c056465762d31"),
        (der.utf8_string("\u00e9"), "0c02c3a9"),
        (der.ia5_string("a.b"), "1603612e62"),
        (der.sequence(), "3000"),
        (der.sequence(der.null(), der.null()), "300405000500"),
        (der.explicit(0, der.integer(2)), "a003020102"),
        (der.explicit(3, der.sequence()), "a3023000"),
        (der.implicit_primitive(6, b"urn:x"), "860575726e3a78"),
        (der.implicit_primitive(0, b"\x01"), "800101"),
    ],
)
def test_simple_types(encoded: bytes, expected: str) -> None:
    assert encoded.hex() == expected


def test_ia5_string_refuses_non_ascii() -> None:
    with pytest.raises(UnicodeEncodeError):
        der.ia5_string("caf\u00e9")


# --- OBJECT IDENTIFIER -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        ("1.2.840.10045.4.3.2", "06082a8648ce3d040302"),  # ecdsa-with-SHA256
        ("1.2.840.10045.4.3.3", "06082a8648ce3d040303"),  # ecdsa-with-SHA384
        ("1.2.840.113549.1.1.11", "06092a864886f70d01010b"),  # sha256WithRSAEncryption
        ("2.5.4.3", "0603550403"),  # commonName
        ("2.5.29.19", "0603551d13"),  # basicConstraints
        ("1.3.6.1.5.5.7.3.2", "06082b06010505070302"),  # clientAuth
        ("2.999.3", "0603883703"),  # X.690 8.19.5 example
        ("0.0", "060100"),
        ("2.40", "060178"),
        ("1.2.128", "06032a8100"),
        ("1.2.16383", "06032aff7f"),
        ("1.2.16384", "06042a818000"),
    ],
)
def test_oid_known_encodings(dotted: str, expected: str) -> None:
    assert der.oid(dotted).hex() == expected


def _cryptography_oid_der(dotted: str) -> bytes:
    # ExtendedKeyUsage ::= SEQUENCE OF OBJECT IDENTIFIER: with one element, the content of
    # the SEQUENCE is exactly cryptography's own encoding of the OID.
    eku = x509.ExtendedKeyUsage([x509.ObjectIdentifier(dotted)]).public_bytes()
    tag, content = read_one(eku)
    assert tag == der.SEQUENCE
    return content


_arc = st.integers(min_value=0, max_value=2**64)
_oids = st.one_of(
    st.tuples(st.sampled_from([0, 1]), st.integers(0, 39), st.lists(_arc, max_size=8)),
    st.tuples(st.just(2), st.integers(0, 2**32), st.lists(_arc, max_size=8)),
).map(lambda t: ".".join(map(str, [t[0], t[1], *t[2]])))


#: The longest OID content cryptography encodes: rust-asn1 keeps an OID's encoding in a
#: buffer of 63 bytes, and refuses a longer one (X.690 sets no such limit).
_CRYPTOGRAPHY_OID_MAX = 63


@settings(max_examples=300, deadline=None)
@given(_oids)
# At the reference's limit, and one byte past it (ten arcs, 64 bytes of content).
@example("1.2." + ".".join([str(2**63)] * 6) + ".1.1")
@example("2.0.268435456.268435456.562949953421312.562949953421312.72057594037927936."
         "72057594037927936.72057594037927936.9223372036854775808")
def test_oid_matches_cryptography(dotted: str) -> None:
    ours = der.oid(dotted)
    tag, content = read_one(ours)
    assert tag == der.OBJECT_IDENTIFIER
    if len(content) > _CRYPTOGRAPHY_OID_MAX:
        # Beyond what the reference holds: it refuses, and only then.
        with pytest.raises(ValueError):
            _cryptography_oid_der(dotted)
        return
    assert ours == _cryptography_oid_der(dotted)


@pytest.mark.parametrize("dotted", ["1", "3.1", "1.40", "0.40", "1.2.x", ""])
def test_oid_refuses_invalid(dotted: str) -> None:
    with pytest.raises(ValueError):
        der.oid(dotted)


# --- time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x17\x0d491231235959Z"),
        (datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
        (datetime(1950, 1, 1, 0, 0, 0, tzinfo=UTC), b"\x17\x0d500101000000Z"),
        (datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f19491231235959Z"),
        (datetime(2000, 2, 29, 12, 0, 0, tzinfo=UTC), b"\x17\x0d000229120000Z"),
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f99991231235959Z"),
        # GeneralizedTime's year has four digits, however small.
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), b"\x18\x0f09990102030405Z"),
        # Fractions of a second are dropped, never rounded up.
        (datetime(2030, 6, 1, 12, 0, 0, 999_999, tzinfo=UTC), b"\x17\x0d300601120000Z"),
        # Other zones are converted to Zulu, and the conversion decides the type.
        (
            datetime(2050, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            b"\x17\x0d491231233000Z",
        ),
        (
            datetime(2049, 12, 31, 20, 0, tzinfo=timezone(timedelta(hours=-5))),
            b"\x18\x0f20500101010000Z",
        ),
        (
            datetime(2030, 1, 1, 5, 45, tzinfo=timezone(timedelta(hours=5, minutes=45))),
            b"\x17\x0d300101000000Z",
        ),
    ],
)
def test_time_encodings(moment: datetime, expected: bytes) -> None:
    assert der.time(moment) == expected


def test_epoch_time() -> None:
    assert der.epoch_time(0) == b"\x17\x0d700101000000Z"
    assert der.epoch_time(2524608000) == b"\x18\x0f20500101000000Z"
    assert der.epoch_time(2524607999) == b"\x17\x0d491231235959Z"


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2050, 1, 1, tzinfo=UTC)),
        (datetime(1950, 1, 1, tzinfo=UTC), datetime(2100, 6, 30, 8, 9, 10, tzinfo=UTC)),
    ],
)
def test_time_matches_cryptography(not_before: datetime, not_after: datetime) -> None:
    # cryptography's certificate builder applies the same RFC 5280 rule: the validity
    # SEQUENCE it writes must be byte-identical to ours, and ours must parse back.
    cert = self_signed(make_key("p256"), "t", not_before=not_before, not_after=not_after)
    ours = der.sequence(der.time(not_before), der.time(not_after))
    assert ours in cert.tbs_certificate_bytes
    assert cert.not_valid_before_utc == not_before
    assert cert.not_valid_after_utc == not_after


# --- SET OF ----------------------------------------------------------------------------


def test_set_of_sorts_by_encoding() -> None:
    elements = [der.integer(300), der.integer(5), der.integer(1)]
    expected = "310a" + "020101" + "020105" + "0202012c"
    for order in itertools.permutations(elements):
        assert der.set_of(*order).hex() == expected


def test_set_of_matches_cryptography_multi_valued_rdn() -> None:
    cn = x509.NameAttribute(NameOID.COMMON_NAME, "zz-device")
    org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aa-org")
    ours_cn = der.sequence(der.oid(enc.OID_CN), der.utf8_string("zz-device"))
    ours_o = der.sequence(der.oid(enc.OID_O), der.utf8_string("aa-org"))
    expected = x509.Name([x509.RelativeDistinguishedName([cn, org])]).public_bytes()
    assert der.sequence(der.set_of(ours_cn, ours_o)) == expected
    assert der.sequence(der.set_of(ours_o, ours_cn)) == expected


# --- KeyUsage bits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("positions", "expected"),
    [
        ((enc.DIGITAL_SIGNATURE,), "03020780"),
        ((enc.KEY_CERT_SIGN, enc.CRL_SIGN), "03020106"),
        ((enc.DIGITAL_SIGNATURE, enc.KEY_CERT_SIGN, enc.CRL_SIGN), "03020186"),
        ((enc.DIGITAL_SIGNATURE, enc.KEY_ENCIPHERMENT), "030205a0"),
        ((8,), "0303070080"),  # decipherOnly: second octet
    ],
)
def test_key_usage_bits_known(positions: tuple[int, ...], expected: str) -> None:
    assert enc.key_usage_bits(*positions).hex() == expected


_KU_FIELDS = [
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
]


def test_key_usage_bits_match_cryptography_for_every_combination() -> None:
    checked = 0
    for mask in range(1, 1 << 9):
        positions = [i for i in range(9) if mask >> i & 1]
        flags = {name: (i in positions) for i, name in enumerate(_KU_FIELDS)}
        if (flags["encipher_only"] or flags["decipher_only"]) and not flags["key_agreement"]:
            continue  # not representable in cryptography's KeyUsage
        expected = x509.KeyUsage(**flags).public_bytes()
        assert enc.key_usage_bits(*positions) == expected, positions
        checked += 1
    assert checked > 300


# --- a sanity check of the test reader itself -------------------------------------------


def test_reader_refuses_non_der_lengths() -> None:
    for bad in ("0481050102030405", "048200050102030405", "0480", "0405aa"):
        with pytest.raises(DerError):
            read_tlv(bytes.fromhex(bad))
    assert children(bytes.fromhex("05000101ff")) == [(0x05, b""), (0x01, b"\xff")]
