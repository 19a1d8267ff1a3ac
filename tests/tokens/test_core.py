"""The pure verifier: every acceptance and every refusal, with its specific reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.errors import (
    InputTooLargeError,
    InvalidInputError,
    MalformedInputError,
    TokenAlgorithmError,
    TokenAudienceError,
    TokenClaimsError,
    TokenDeviceError,
    TokenError,
    TokenExpiredError,
    TokenKeyExpiredError,
    TokenKeyRevokedError,
    TokenMalformedError,
    TokenNotYetValidError,
    TokenReplayError,
    TokenSignatureError,
    TokenUnknownKeyError,
)
from iotsec.identity.device_tokens import (
    MAX_TOKEN_BYTES,
    MemoryReplayCache,
    VerificationKey,
    VerifiedToken,
    load_public_key,
    public_verification_key,
    secret_verification_key,
    verify_device_token,
)
from tests.tokens.support import (
    b64,
    b64json,
    claims_for,
    ed,
    hs256_by_hand,
    p256,
    public_der,
    public_pem,
    replace_payload,
    sign,
    unsigned,
)

NOW = 1_800_000_000
AUD = "iotsec"
D1_KEY = p256()
D1_ED = ed()
D2_KEY = p256()
D1 = load_public_key(public_pem(D1_KEY))
D1E = load_public_key(public_pem(D1_ED))
D2 = load_public_key(public_pem(D2_KEY))
SECRET = b"s" * 43


def vkey(pub: Any, **kw: Any) -> VerificationKey:
    key = public_verification_key(pub.kid, pub.spki_der, **kw)
    assert key is not None
    return key


KEYS: dict[str, list[VerificationKey]] = {
    "d1": [vkey(D1), vkey(D1E), secret_verification_key("hs256-d1", SECRET)],
    "d2": [vkey(D2)],
}


def lookup(device_id: str, kid: str) -> Sequence[VerificationKey]:
    return [k for k in KEYS.get(device_id, []) if k.kid == kid]


def check(token: str, *, keys: Any = lookup, now: int = NOW, seen: Any = None,
          **kw: Any) -> VerifiedToken:
    return verify_device_token(token, device_keys=keys, audience=AUD, now=now,
                               max_lifetime=3600,
                               seen=MemoryReplayCache() if seen is None else seen, **kw)


def es(claims: dict[str, Any] | None = None, **over: Any) -> str:
    return sign(D1_KEY, D1.kid, claims or claims_for("d1", NOW, **over))


# --- acceptance -------------------------------------------------------------------------


def test_es256_token_is_accepted() -> None:
    claims = claims_for("d1", NOW, extra="kept")
    result = check(sign(D1_KEY, D1.kid, claims))
    assert result.device_id == "d1"
    assert result.kid == D1.kid
    assert result.algorithm == "ES256"
    assert result.jti == claims["jti"]
    assert (result.issued_at, result.expires_at) == (NOW, NOW + 300)
    assert result.claims["extra"] == "kept"


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
def test_eddsa_token_is_accepted_under_both_names(alg: str) -> None:
    result = check(sign(D1_ED, D1E.kid, claims_for("d1", NOW), alg=alg))
    assert result.algorithm == "EdDSA"


def test_hs256_secret_token_is_accepted() -> None:
    assert check(sign(SECRET, "hs256-d1", claims_for("d1", NOW))).algorithm == "HS256"


def test_static_key_list_and_audience_list() -> None:
    token = es(aud=["other", AUD])
    assert check(token, keys=KEYS["d1"]).device_id == "d1"


def test_kid_is_the_rfc7638_thumbprint() -> None:
    from joserfc.jwk import ECKey

    assert D1.kid == ECKey.import_key(public_der(D1_KEY)).thumbprint()
    assert D1.algorithm == "ES256"
    assert D1E.algorithm == "EdDSA"
    assert load_public_key(public_der(D1_KEY)) == D1


# --- not a JWT --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [
    "", "garbage", "a.b", "a.b.c.d", "...", "eyJhbGciOiJFUzI1NiJ9..sig",
    "!!!.###.$$$", "a b.c.d", "é.b.c", "a.b.c\n", "\x00.\x00.\x00",
    f"{b64(b'not json')}.{b64json({'sub': 'd1'})}.AAAA",
    f"{b64json(['alg'])}.{b64json({'sub': 'd1'})}.AAAA",
    f"{b64json({'alg': 'ES256', 'kid': 'x'})}.{b64(b'not json')}.AAAA",
    f"{b64json({'alg': 'ES256', 'kid': 'x'})}.{b64json([1, 2])}.AAAA",
    f"{b64json({'alg': 'ES256', 'kid': 'x'})}.{b64(b'[' * 5000)}.AAAA",
    f"{b64json({'alg': 'ES256', 'kid': 'x'})}.A.AAAA",   # impossible base64url length
    f"{b64json({'alg': 'ES256', 'kid': 'x'})}.eyJ=.AAAA",
])
def test_not_a_jwt(token: str) -> None:
    with pytest.raises(TokenMalformedError):
        check(token)


def test_huge_token_is_refused_before_decoding() -> None:
    token = es()
    huge = token[:-2] + "A" * MAX_TOKEN_BYTES
    with pytest.raises(TokenMalformedError, match="longer than"):
        check(huge)
    with pytest.raises(TokenMalformedError):
        check("A" * 10_000_000)


def test_b64_false_and_crit_headers_are_refused() -> None:
    claims = claims_for("d1", NOW)
    for extra in ({"b64": False, "crit": ["b64"]}, {"crit": ["exp"]}):
        header = {"alg": "HS256", "kid": "hs256-d1", **extra}
        with pytest.raises(TokenMalformedError):
            check(hs256_by_hand(SECRET, header, claims))


def test_unknown_header_parameter_is_refused() -> None:
    token = hs256_by_hand(SECRET, {"alg": "HS256", "kid": "hs256-d1", "zzz": 1},
                          claims_for("d1", NOW))
    with pytest.raises(TokenMalformedError):
        check(token)


# --- algorithm --------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused_before_any_key_lookup(alg: str) -> None:
    def no_lookup(device_id: str, kid: str) -> Sequence[VerificationKey]:
        raise AssertionError("looked up a key for an unsigned token")

    token = unsigned({"alg": alg, "kid": D1.kid}, claims_for("d1", NOW))
    with pytest.raises(TokenAlgorithmError, match="none"):
        check(token, keys=no_lookup)


def test_missing_alg() -> None:
    token = f"{b64json({'kid': D1.kid})}.{b64json(claims_for('d1', NOW))}.AAAA"
    with pytest.raises(TokenAlgorithmError):
        check(token)
    token = f"{b64json({'alg': 5, 'kid': D1.kid})}.{b64json(claims_for('d1', NOW))}.AAAA"
    with pytest.raises(TokenAlgorithmError):
        check(token)


@pytest.mark.parametrize("secret", [public_pem(D1_KEY), public_der(D1_KEY)], ids=["pem", "der"])
def test_algorithm_confusion_hs256_with_the_public_key_fails(secret: bytes) -> None:
    """The classic attack: HMAC the token with the (public) ES256 key as the secret."""
    token = hs256_by_hand(secret, {"alg": "HS256", "kid": D1.kid}, claims_for("d1", NOW))
    with pytest.raises(TokenAlgorithmError, match="ES256"):
        check(token)


def test_header_alg_must_match_the_keys_algorithm() -> None:
    # An ES256 key named in an EdDSA token, an EdDSA key in an ES256 token, ES384.
    with pytest.raises(TokenAlgorithmError):
        check(sign(D1_ED, D1.kid, claims_for("d1", NOW)))
    token = es()
    _, payload, sig = token.split(".")
    for alg in ("ES384", "EdDSA", "RS256", "PS256", "HS512"):
        forged = f"{b64json({'alg': alg, 'kid': D1.kid})}.{payload}.{sig}"
        with pytest.raises(TokenAlgorithmError):
            check(forged)
    with pytest.raises(TokenAlgorithmError):
        check(sign(SECRET, D1E.kid, claims_for("d1", NOW)))


# --- keys -------------------------------------------------------------------------------


def test_unknown_kid() -> None:
    with pytest.raises(TokenUnknownKeyError):
        check(sign(D1_KEY, "not-a-registered-kid", claims_for("d1", NOW)))


def test_missing_kid() -> None:
    token = f"{b64json({'alg': 'ES256'})}.{b64json(claims_for('d1', NOW))}.AAAA"
    with pytest.raises(TokenUnknownKeyError):
        check(token)


def test_unknown_device_has_no_keys() -> None:
    with pytest.raises(TokenUnknownKeyError):
        check(sign(D1_KEY, D1.kid, claims_for("nobody", NOW)))


def test_signed_with_another_devices_key() -> None:
    # d1's token, d1's kid, but d2's private key: the signature does not verify.
    with pytest.raises(TokenSignatureError):
        check(sign(D2_KEY, D1.kid, claims_for("d1", NOW)))
    # d1's token naming d2's key: d2's key is not one of d1's keys.
    with pytest.raises(TokenUnknownKeyError):
        check(sign(D2_KEY, D2.kid, claims_for("d1", NOW)))


def test_tampered_payload() -> None:
    claims = claims_for("d1", NOW)
    for token in (es(claims), sign(D1_ED, D1E.kid, claims),
                  sign(SECRET, "hs256-d1", claims)):
        with pytest.raises(TokenSignatureError):
            check(replace_payload(token, {**claims, "exp": NOW + 3000}))
        with pytest.raises(TokenSignatureError):
            check(replace_payload(token, {**claims, "scope": "admin"}))


def test_truncated_or_flipped_signature() -> None:
    token = es()
    with pytest.raises(TokenSignatureError):
        check(token[:-4])
    with pytest.raises(TokenSignatureError):
        check(token.rsplit(".", 1)[0] + ".")
    last = "A" if token[-5] != "A" else "B"
    with pytest.raises(TokenSignatureError):
        check(token[:-5] + last + token[-4:])


def test_revoked_and_expired_keys() -> None:
    revoked = vkey(D1, revoked_at=NOW - 1)
    with pytest.raises(TokenKeyRevokedError):
        check(es(), keys=[revoked])
    # A revocation scheduled for later (a superseded certificate in its grace period).
    assert check(es(), keys=[vkey(D1, revoked_at=NOW + 60)]).device_id == "d1"
    with pytest.raises(TokenKeyExpiredError):
        check(es(), keys=[vkey(D1, not_after=NOW)])
    with pytest.raises(TokenKeyExpiredError):
        check(sign(SECRET, "hs256-d1", claims_for("d1", NOW)),
              keys=[secret_verification_key("hs256-d1", SECRET, not_after=NOW - 5)])


def test_lookup_may_refuse_the_device() -> None:
    def disabled(device_id: str, kid: str) -> Sequence[VerificationKey]:
        raise TokenDeviceError(f"device {device_id!r} is disabled")

    with pytest.raises(TokenDeviceError):
        check(es(), keys=disabled)


# --- claims -----------------------------------------------------------------------------


def test_expired_with_leeway() -> None:
    token = es(iat=NOW - 400, exp=NOW - 100)
    with pytest.raises(TokenExpiredError):
        check(token)
    assert check(es(iat=NOW - 300, exp=NOW - 10)).device_id == "d1"  # within 30 s skew
    with pytest.raises(TokenExpiredError):
        check(es(iat=NOW - 300, exp=NOW - 10), leeway=0)


def test_not_yet_valid_beyond_leeway_only() -> None:
    with pytest.raises(TokenNotYetValidError):
        check(es(iat=NOW + 120, exp=NOW + 400))
    assert check(es(iat=NOW + 20, exp=NOW + 300)).issued_at == NOW + 20
    with pytest.raises(TokenNotYetValidError):
        check(es(nbf=NOW + 120))
    assert check(es(nbf=NOW + 25)).device_id == "d1"


@pytest.mark.parametrize("aud", ["other", ["other", "x"], "", None, 5, [5], {"a": 1}])
def test_wrong_or_missing_audience(aud: Any) -> None:
    claims = claims_for("d1", NOW)
    if aud is None:
        del claims["aud"]
    else:
        claims["aud"] = aud
    with pytest.raises(TokenAudienceError):
        check(es(claims))


def test_lifetime_over_maximum() -> None:
    with pytest.raises(TokenClaimsError, match="lifetime"):
        check(es(lifetime=3601))
    assert check(es(lifetime=3600)).expires_at == NOW + 3600
    with pytest.raises(TokenClaimsError):
        check(es(iat=NOW, exp=NOW))


def test_iss_must_equal_sub() -> None:
    with pytest.raises(TokenClaimsError, match="iss"):
        check(es(iss="d2"))
    with pytest.raises(TokenClaimsError, match="iss"):
        check(es(iss=None))


@pytest.mark.parametrize("claim", ["jti", "iat", "exp", "sub"])
def test_missing_required_claim(claim: str) -> None:
    with pytest.raises(TokenClaimsError, match=claim):
        check(es(**{claim: None}))


@pytest.mark.parametrize(("claim", "value"), [
    ("jti", ""), ("jti", 5), ("jti", "x" * 129), ("iat", "now"), ("exp", True),
    ("exp", [1]), ("sub", 7), ("sub", "bad/id"), ("nbf", "soon"),
])
def test_invalid_claim_values(claim: str, value: Any) -> None:
    with pytest.raises(TokenClaimsError):
        check(es(**{claim: value}))


def test_sub_only_from_iss_when_sub_missing() -> None:
    # The lookup uses iss when sub is missing; after verification, sub is still required.
    with pytest.raises(TokenClaimsError, match="sub"):
        check(es(sub=None))


def test_float_dates_are_accepted() -> None:
    result = check(es(iat=NOW + 0.5, exp=NOW + 60.25))
    assert (result.issued_at, result.expires_at) == (NOW, NOW + 60)


# --- replay -----------------------------------------------------------------------------


def test_replayed_jti_is_refused_and_a_new_jti_works() -> None:
    cache = MemoryReplayCache()
    token = es(jti="once")
    check(token, seen=cache)
    with pytest.raises(TokenReplayError):
        check(token, seen=cache)
    # A different token with the same jti from the same device is a replay too.
    with pytest.raises(TokenReplayError):
        check(es(jti="once", exp=NOW + 200), seen=cache)
    check(es(jti="twice"), seen=cache)
    # The same jti from another device is not.
    check(sign(D2_KEY, D2.kid, claims_for("d2", NOW, jti="once")), seen=cache)
    assert len(cache) == 3


def test_replay_cache_remembers_until_expiry_plus_leeway() -> None:
    calls: list[tuple[str, str, int]] = []

    def seen(device_id: str, jti: str, until: int) -> bool:
        calls.append((device_id, jti, until))
        return False

    check(es(jti="j", exp=NOW + 100), seen=seen)
    assert calls == [("d1", "j", NOW + 100 + 30)]
    cache = MemoryReplayCache()
    cache("d1", "old", NOW - 1)
    cache("d1", "new", NOW + 10)
    assert cache.purge(NOW) == 1
    assert len(cache) == 1


def test_invalid_tokens_never_touch_the_replay_cache() -> None:
    cache = MemoryReplayCache()
    for token in (es(aud="x"), es(iat=NOW - 9000, exp=NOW - 8000),
                  replace_payload(es(), claims_for("d1", NOW))):
        with pytest.raises(TokenError):
            check(token, seen=cache)
    assert len(cache) == 0


# --- messages never carry the token or secrets ------------------------------------------


def test_messages_do_not_contain_the_token() -> None:
    forged = hs256_by_hand(public_pem(D1_KEY), {"alg": "HS256", "kid": D1.kid},
                           claims_for("d1", NOW))
    samples = [forged, es(aud="x"), replace_payload(es(), claims_for("d1", NOW)),
               sign(SECRET, "hs256-d1", claims_for("d1", NOW, exp=NOW - 500, iat=NOW - 600))]
    for token in samples:
        with pytest.raises(TokenError) as info:
            check(token)
        text = f"{info.value} {info.value.hint}"
        for part in token.split("."):
            assert part not in text
        assert SECRET.decode() not in text
        assert info.value.status == 401


# --- the key types themselves -----------------------------------------------------------


def test_keys_are_bound_to_one_algorithm() -> None:
    from joserfc.jwk import ECKey, OctKey

    with pytest.raises(InvalidInputError):
        VerificationKey("k", "ES256", OctKey.import_key(SECRET))
    with pytest.warns(UserWarning, match="112 bits"), pytest.raises(InvalidInputError):
        VerificationKey("k", "HS256", OctKey.import_key(b"short"))
    with pytest.raises(InvalidInputError):
        VerificationKey("k", "RS256", ECKey.import_key(public_der(D1_KEY)))
    p384 = public_verification_key(
        "k", ec_p384_der())
    assert p384 is None


def ec_p384_der() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_load_public_key_refusals() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(
    ).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidInputError, match="RSA"):
        load_public_key(rsa_pem)
    with pytest.raises(InvalidInputError, match="secp384r1"):
        load_public_key(ec_p384_der())
    private = D1_KEY.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    with pytest.raises(InvalidInputError, match="private key"):
        load_public_key(private)
    with pytest.raises(MalformedInputError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(MalformedInputError):
        load_public_key(b"\x30\x03\x02\x01\x00")
    with pytest.raises(InputTooLargeError):
        load_public_key(b"A" * 100_000)


# --- fuzzing ----------------------------------------------------------------------------

_B64 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
               max_size=60)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_strings_raise_only_token_errors(text: str) -> None:
    with pytest.raises(TokenError):
        check(text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_B64, _B64, _B64)
def test_arbitrary_three_part_tokens_raise_only_token_errors(a: str, b: str, c: str) -> None:
    with pytest.raises(TokenError):
        check(f"{a}.{b}.{c}")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(header=_JSON, claims=_JSON, sig=_B64,
       alg=st.sampled_from(["ES256", "EdDSA", "HS256", "none", "RS256", "Ed25519"]),
       kid=st.sampled_from([D1.kid, D1E.kid, "hs256-d1", "nope"]))
def test_arbitrary_json_tokens_raise_only_token_errors(header: Any, claims: Any, sig: str,
                                                       alg: str, kid: str) -> None:
    if isinstance(header, dict):
        header = {**header, "alg": alg, "kid": kid}
    if isinstance(claims, dict):
        claims = {"sub": "d1", **claims}
    with pytest.raises(TokenError):
        check(f"{b64json(header)}.{b64json(claims)}.{sig}")


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["iss", "sub", "aud", "iat", "exp", "nbf", "jti"]),
                       _JSON, max_size=7))
def test_signed_arbitrary_claims_raise_only_token_errors(overrides: dict[str, Any]) -> None:
    claims = {**claims_for("d1", NOW), **overrides}
    try:
        result = check(sign(SECRET, "hs256-d1", claims))
    except TokenError:
        return
    assert result.device_id == "d1"

