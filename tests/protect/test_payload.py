"""COSE_Encrypt0 / COSE_Sign1 between a device and an application: round trips, key
establishment, rotation, and every refusal with its own error."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from iotsec.errors import (
    PayloadAlgorithmError,
    PayloadAuthenticationError,
    PayloadError,
    PayloadKeyError,
    PayloadMalformedError,
    PayloadReplayError,
    PayloadTooOldError,
    PayloadUnknownKeyError,
)
from iotsec.protect import cbor
from iotsec.protect.cose import SEQ_LABEL
from iotsec.protect.pairing import Algorithm, SigningKey, establish, new_salt
from iotsec.protect.payload import (
    MAX_MESSAGE,
    MAX_PAYLOAD,
    Keyring,
    Sender,
    open,
    parse,
    seal,
)
from iotsec.protect.replay import ReplayWindow, ReplayWindows
from tests.protect.support import APP, DEVICE, make_pair

AEADS = [Algorithm.A256GCM, Algorithm.CHACHA20_POLY1305]
CURVES = ["x25519", "p256"]


def rebuild(message: bytes, *, protected: dict[int, object] | None = None,
            unprotected: dict[int, object] | None = None, body: bytes | None = None) -> bytes:
    """Re-encode a message with some parts replaced (an attacker's edit)."""
    outer = cbor.loads(message, tags=(16, 18))
    items = list(outer.value)
    if protected is not None:
        header = cbor.loads(items[0])
        header.update(protected)
        items[0] = cbor.dumps(header)
    if unprotected is not None:
        items[1] = unprotected
    if body is not None:
        items[2] = body
    return cbor.dumps(cbor.Tag(outer.tag, items))


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("alg", AEADS)
def test_round_trip_both_directions(curve: str, alg: Algorithm) -> None:
    p = make_pair(curve, alg)
    assert p.device.send.kid == p.app.receive.kid
    assert p.app.send.kid == p.device.receive.kid
    assert p.device.send.kid != p.device.receive.kid  # one key per direction
    for seq, data in enumerate([b"", b"x", b"temperature=21.5" * 16, bytes(range(256)) * 40]):
        message = seal(data, p.device.send, seq=seq, external_aad=b"devices/dev-0001/up")
        assert len(data) < 16 or data[:16] not in message
        opened = open(message, p.app_ring, p.app_window, external_aad=b"devices/dev-0001/up")
        assert (opened.payload, opened.seq, opened.sender_id, opened.recipient_id) == \
            (data, seq, DEVICE, APP)
        assert (opened.kind, opened.alg, opened.kid) == ("encrypt0", alg, p.device.send.kid)
        back = open(seal(data, p.app.send, seq=seq), p.device_ring, p.device_window)
        assert back.payload == data and back.sender_id == APP


def test_message_layout_is_compact_cose() -> None:
    p = make_pair()
    message = seal(b"x" * 256, p.device.send, seq=7)
    parsed = parse(message)
    assert message[:2] == b"\xd0\x83"  # tag 16, array of 3
    assert cbor.loads(parsed.protected) == {1: 3, 4: p.device.send.kid, SEQ_LABEL: 7}
    assert len(parsed.iv or b"") == 12
    assert len(message) - 256 < 64  # header, IV and tag overhead
    # A fresh IV every time: sealing twice gives different messages.
    assert seal(b"x", p.device.send, seq=7) != seal(b"x", p.device.send, seq=7)


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_sign1_round_trip(kind: str) -> None:
    private = ec.generate_private_key(ec.SECP256R1()) if kind == "p256" \
        else ed25519.Ed25519PrivateKey.generate()
    signer = SigningKey(private, sender_id=DEVICE)
    ring = Keyring([signer.verifying_key()])
    message = seal(b"telemetry", signer, seq=3, external_aad=b"topic")
    assert message[:2] == b"\xd2\x84"
    assert b"telemetry" in message  # integrity only
    opened = open(message, ring, ReplayWindow(), external_aad=b"topic")
    assert (opened.payload, opened.kind, opened.recipient_id) == (b"telemetry", "sign1", None)
    assert opened.alg is (Algorithm.ES256 if kind == "p256" else Algorithm.EDDSA)
    sig = cbor.loads(message, tags=(18,)).value[3]
    assert len(sig) == 64  # ECDSA as r || s, not DER
    with pytest.raises(PayloadAuthenticationError):
        open(message, ring, ReplayWindow(), external_aad=b"other topic")
    tampered = rebuild(message, body=b"telemetrY")
    with pytest.raises(PayloadAuthenticationError):
        open(tampered, ring, ReplayWindow(), external_aad=b"topic")


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def test_tampered_ciphertext_tag_iv_and_header_fail_authentication() -> None:
    p = make_pair()
    message = seal(b"payload bytes", p.device.send, seq=1)
    parsed = parse(message)
    # Last byte is in the tag, the one before the tag is ciphertext.
    for index in (len(message) - 1, len(message) - 17):
        with pytest.raises(PayloadAuthenticationError):
            open(flip(message, index), p.app_ring, ReplayWindow())
    with pytest.raises(PayloadAuthenticationError):
        open(rebuild(message, unprotected={5: flip(parsed.iv or b"", 0)}), p.app_ring,
             ReplayWindow())
    # The sequence number is authenticated: an attacker cannot renumber a message.
    with pytest.raises(PayloadAuthenticationError):
        open(rebuild(message, protected={SEQ_LABEL: 2}), p.app_ring, ReplayWindow())
    with pytest.raises(PayloadAuthenticationError):
        open(message, p.app_ring, ReplayWindow(), external_aad=b"another/topic")
    # None of these used the sequence number up: the genuine message still opens.
    assert open(message, p.app_ring, p.app_window).payload == b"payload bytes"


def test_wrong_kid_and_wrong_recipient() -> None:
    p = make_pair()
    message = seal(b"m", p.device.send, seq=1)
    with pytest.raises(PayloadUnknownKeyError):
        open(rebuild(message, protected={4: b"\x00" * 8}), p.app_ring, ReplayWindow())
    # Another application (its own key) derives other keys: the kid is not in its ring.
    other = make_pair()
    with pytest.raises(PayloadUnknownKeyError):
        open(message, other.app_ring, ReplayWindow())
    # Relabelled with a kid the other recipient holds, it still does not authenticate.
    relabelled = rebuild(message, protected={4: other.app.receive.kid})
    with pytest.raises(PayloadAuthenticationError):
        open(relabelled, other.app_ring, ReplayWindow())
    # Reflected back to the device (its own message as if from the app): unknown kid.
    with pytest.raises(PayloadUnknownKeyError):
        open(message, p.device_ring, ReplayWindow())


def test_replayed_and_too_old_messages_have_their_own_errors() -> None:
    p = make_pair()
    window = ReplayWindow(16)
    first = seal(b"1", p.device.send, seq=1)
    open(first, p.app_ring, window)
    with pytest.raises(PayloadReplayError):
        open(first, p.app_ring, window)
    open(seal(b"40", p.device.send, seq=40), p.app_ring, window)
    late = seal(b"30", p.device.send, seq=30)
    assert open(late, p.app_ring, window).payload == b"30"  # out of order, inside the window
    with pytest.raises(PayloadTooOldError):
        open(seal(b"2", p.device.send, seq=2), p.app_ring, window)
    with pytest.raises(PayloadTooOldError):
        open(first, p.app_ring, window)
    # A forged message with a fresh number does not move the window.
    sealed = seal(b"x", p.device.send, seq=10_000)
    forged = flip(sealed, len(sealed) - 1)
    with pytest.raises(PayloadAuthenticationError):
        open(forged, p.app_ring, window)
    assert window.top == 40


def test_replay_windows_follow_the_key_sender() -> None:
    a, b = make_pair(), make_pair()
    ring = Keyring([a.app.receive])
    # Another device with its own identity, under the same application ring.
    d2 = x25519.X25519PrivateKey.generate()
    app2 = establish(a.app_key, d2.public_key(), own_id=APP, peer_id="dev-0002", salt=a.salt)
    dev2 = establish(d2, a.app_key.public_key(), own_id="dev-0002", peer_id=APP, salt=a.salt)
    ring.add(app2.receive)
    windows = ReplayWindows()
    open(seal(b"a", a.device.send, seq=5), ring, windows)
    assert open(seal(b"b", dev2.send, seq=5), ring, windows).sender_id == "dev-0002"
    with pytest.raises(PayloadReplayError):
        open(seal(b"a", a.device.send, seq=5), ring, windows)
    assert b.app.receive.kid not in ring


def test_rotation_keeps_messages_in_flight() -> None:
    p = make_pair()
    old_message = seal(b"sent before rotation", p.device.send, seq=100)
    # Rotate: a new salt gives new keys with new kids; the device switches at once, the
    # application accepts both until the old key is retired.
    salt2 = new_salt()
    dev2 = establish(p.device_key, p.app_key.public_key(), own_id=DEVICE, peer_id=APP,
                     salt=salt2)
    app2 = establish(p.app_key, p.device_key.public_key(), own_id=APP, peer_id=DEVICE,
                     salt=salt2)
    assert dev2.send.kid != p.device.send.kid
    p.app_ring.add(app2.receive)
    new_message = seal(b"after", dev2.send, seq=101)
    assert open(new_message, p.app_ring, p.app_window).payload == b"after"
    assert open(old_message, p.app_ring, p.app_window).payload == b"sent before rotation"
    p.app_ring.retire(p.device.send.kid)
    with pytest.raises(PayloadUnknownKeyError):
        open(seal(b"late", p.device.send, seq=102), p.app_ring, p.app_window)
    with pytest.raises(PayloadUnknownKeyError):
        p.app_ring.retire(p.device.send.kid)
    with pytest.raises(PayloadKeyError):
        p.app_ring.add(type(app2.receive)(b"k" * 32, kid=app2.receive.kid, alg=Algorithm.A256GCM,
                                          sender_id="x", recipient_id="y"))


def test_algorithm_and_key_type_mismatches() -> None:
    p = make_pair()
    message = seal(b"m", p.device.send, seq=1)
    with pytest.raises(PayloadAlgorithmError, match="ChaCha20"):
        open(rebuild(message, protected={1: 24}), p.app_ring, ReplayWindow())
    with pytest.raises(PayloadAlgorithmError):
        open(rebuild(message, protected={1: 1}), p.app_ring, ReplayWindow())  # A128GCM
    # A Sign1 naming an encryption key's kid, and an Encrypt0 naming a signing key's kid.
    signer = SigningKey(ed25519.Ed25519PrivateKey.generate(), sender_id=DEVICE,
                        kid=p.device.send.kid)
    with pytest.raises(PayloadAlgorithmError, match="encryption key"):
        open(seal(b"m", signer, seq=2), p.app_ring, ReplayWindow())
    ring = Keyring([SigningKey(ed25519.Ed25519PrivateKey.generate(), sender_id=DEVICE,
                               kid=p.device.send.kid).verifying_key()])
    with pytest.raises(PayloadAlgorithmError, match="signing key"):
        open(message, ring, ReplayWindow())


def test_pairing_refuses_bad_keys_and_parameters() -> None:
    x = x25519.X25519PrivateKey.generate()
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    salt = new_salt()
    with pytest.raises(PayloadKeyError, match="two X25519 keys or two P-256"):
        establish(x, p256.public_key(), own_id="a", peer_id="b", salt=salt)
    with pytest.raises(PayloadKeyError):
        establish(p384, p384.public_key(), own_id="a", peer_id="b", salt=salt)
    with pytest.raises(PayloadKeyError, match="salt"):
        establish(x, x.public_key(), own_id="a", peer_id="b", salt=b"fixed")
    with pytest.raises(PayloadKeyError, match="same identity"):
        establish(x, x.public_key(), own_id="a", peer_id="a", salt=salt)
    for bad in ("", " a", "a\n", "é", "x" * 256):
        with pytest.raises(PayloadKeyError, match="identity"):
            establish(x, x.public_key(), own_id=bad, peer_id="b", salt=salt)
    with pytest.raises(PayloadKeyError, match="not an encryption algorithm"):
        establish(x, x.public_key(), own_id="a", peer_id="b", salt=salt, alg=Algorithm.ES256)
    # A small-order X25519 point gives the all-zero secret: refused.
    zero = x25519.X25519PublicKey.from_public_bytes(b"\x00" * 32)
    with pytest.raises(PayloadKeyError, match="not usable"):
        establish(x, zero, own_id="a", peer_id="b", salt=salt)
    with pytest.raises(PayloadKeyError, match="cannot sign"):
        SigningKey(ec.generate_private_key(ec.SECP384R1()), sender_id="a")  # type: ignore[arg-type]


def test_salt_and_identities_are_bound_into_the_keys() -> None:
    dev, app = x25519.X25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    salt = new_salt()
    base = establish(dev, app.public_key(), own_id=DEVICE, peer_id=APP, salt=salt)
    variants = [
        establish(dev, app.public_key(), own_id=DEVICE, peer_id=APP, salt=new_salt()),
        establish(dev, app.public_key(), own_id="dev-0002", peer_id=APP, salt=salt),
        establish(dev, app.public_key(), own_id=DEVICE, peer_id="app:other", salt=salt),
        establish(dev, app.public_key(), own_id=DEVICE, peer_id=APP, salt=salt,
                  alg=Algorithm.CHACHA20_POLY1305),
    ]
    kids = {base.send.kid} | {v.send.kid for v in variants}
    assert len(kids) == 5
    message = seal(b"m", base.send, seq=1)
    for v in variants:
        with pytest.raises(PayloadUnknownKeyError):
            open(message, Keyring([v.send]), ReplayWindow())
    assert "key" not in repr(base).lower() or "hidden" in repr(base) or "kid" in repr(base)
    assert base.send.kid.hex() in repr(base.send)


def test_sender_numbers_messages() -> None:
    p = make_pair()
    sender = Sender(p.device.send, next_seq=41)
    seqs = [open(sender.seal(b"x"), p.app_ring, p.app_window).seq for _ in range(3)]
    assert seqs == [41, 42, 43] and sender.next_seq == 44


def test_size_and_range_limits() -> None:
    p = make_pair()
    with pytest.raises(PayloadError, match="at most"):
        seal(b"x" * (MAX_PAYLOAD + 1), p.device.send, seq=1)
    for seq in (-1, 2**64):
        with pytest.raises(PayloadError, match="sequence"):
            seal(b"x", p.device.send, seq=seq)
    assert parse(seal(b"x", p.device.send, seq=2**64 - 1)).seq == 2**64 - 1
    with pytest.raises(PayloadMalformedError, match="larger"):
        parse(b"\xd0" + b"\x00" * MAX_MESSAGE)
    big = seal(b"x" * MAX_PAYLOAD, p.device.send, seq=3)
    assert open(big, p.app_ring, p.app_window).payload == b"x" * MAX_PAYLOAD


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda m: m[1:], "tagged"),  # untagged
    (lambda m: cbor.dumps(cbor.Tag(16, [b"", {}, b""])), "protected header"),
    (lambda m: cbor.dumps(cbor.Tag(16, [b"\xa0", {}, b""])), "algorithm"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps({1: 3, 4: b"k"}), {5: b"i" * 12}, b"c"])),
     "sequence"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps({1: 3, SEQ_LABEL: 1}), {5: b"i" * 12}, b""])),
     "kid"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps({1: 3, 4: b"k", SEQ_LABEL: 1}), {}, b""])),
     "IV"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps({1: 3, 4: b"k", SEQ_LABEL: 1}),
                                        {5: b"i" * 12, 4: b"k"}, b""])), "both"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps({1: 3, 4: b"k", SEQ_LABEL: 1, 2: [1]}),
                                        {5: b"i" * 12}, b""])), "unsupported header"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps({1: 3, 4: b"k", SEQ_LABEL: 1}),
                                        {5: b"i" * 12}, None])), "detached"),
    (lambda m: cbor.dumps(cbor.Tag(18, [cbor.dumps({1: -8, 4: b"k", SEQ_LABEL: 1}), {}, b"p",
                                        None])), "signature"),
    (lambda m: cbor.dumps(cbor.Tag(16, [cbor.dumps([1]), {5: b"i" * 12}, b""])), "not a map"),
    (lambda m: m + b"\x00", "follow"),
    (lambda m: m[:-1], "longer"),
    (lambda m: b"\xd1" + m[1:], "tag 17"),  # COSE_Mac0 is not accepted
])
def test_malformed_messages(mutate: object, reason: str) -> None:
    p = make_pair()
    message = seal(b"payload", p.device.send, seq=1)
    assert callable(mutate)
    with pytest.raises(PayloadMalformedError, match=reason):
        open(mutate(message), p.app_ring, ReplayWindow())
