"""The CoAP codec (RFC 7252 section 3) and the publish-subscribe mapping: known encodings,
every format error, and Hypothesis over bounded inputs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.coap.message import (
    MAX_MESSAGE,
    MAX_OPTIONS,
    Code,
    Message,
    MessageType,
    Option,
    code_text,
    decode_uint,
    encode_uint,
    parse_message,
)
from iotsec.coap.pubsub import PubSubAction, interpret
from iotsec.errors import CoapMessageError, CoapRequestError


def _request(code: int, path: str, *extra: tuple[int, bytes], payload: bytes = b"") -> Message:
    options = tuple((int(Option.URI_PATH), p.encode()) for p in path.split("/")) + extra
    return Message(MessageType.CON, code, 7, b"\x01", options, payload)


def test_a_known_message_encodes_as_rfc_7252_appendix_a_shows() -> None:
    # GET /temperature, CON, MID 0x7d34, no token (RFC 7252 Figure 16 uses this request).
    msg = Message(MessageType.CON, Code.GET, 0x7D34, b"",
                  ((int(Option.URI_PATH), b"temperature"),))
    assert msg.encode() == bytes.fromhex("40017d34") + b"\xbbtemperature"
    assert parse_message(msg.encode()) == msg


def test_extended_option_deltas_and_lengths_round_trip() -> None:
    msg = Message(MessageType.NON, Code.POST, 1, b"tok",
                  ((int(Option.URI_PATH), b"x" * 13), (int(Option.URI_PATH), b"y" * 300),
                   (int(Option.SIZE1), b"\x01"), (2000, b"")), b"body")
    assert parse_message(msg.encode()) == msg


@pytest.mark.parametrize(("data", "what"), [
    (b"", "shorter than its 4-byte header"),
    (b"\x80\x01\x00\x01", "version 2"),
    (b"\x49\x01\x00\x01" + b"t" * 9, "token length 9"),
    (b"\x42\x01\x00\x01t", "shorter than its token"),
    (b"\x40\x00\x00\x01\xff", "Empty message"),
    (b"\x40\x01\x00\x01\xff", "payload marker followed by no payload"),
    (b"\x40\x01\x00\x01\xf1x", "delta nibble 15"),
    (b"\x40\x01\x00\x01\x1fx", "length nibble 15"),
    (b"\x40\x01\x00\x01\xd0", "delta runs past the end"),
    (b"\x40\x01\x00\x01\x0e\x01", "length runs past the end"),
    (b"\x40\x01\x00\x01\x05abc", "value runs past the end"),
    (b"\x40\x21\x00\x01", "code 1.01 is reserved"),
    (b"\x40\xe0\x00\x01", "code 7.00 is reserved"),
    (b"\x40\x01\x00\x01" + b"\x00" * (MAX_OPTIONS + 1), f"more than {MAX_OPTIONS}"),
    (b"\x40\x02\x00\x01\xff" + b"x" * MAX_MESSAGE, "at most 1152"),
])
def test_format_errors_are_refused(data: bytes, what: str) -> None:
    with pytest.raises(CoapMessageError, match=what.replace(".", r"\.")):
        parse_message(data)


def test_uints() -> None:
    assert encode_uint(0) == b"" and encode_uint(256) == b"\x01\x00"
    assert decode_uint(b"\x01\x00") == 256
    with pytest.raises(CoapMessageError):
        decode_uint(b"\x01" * 5)
    assert code_text(Code.CHANGED) == "2.04" and code_text(Code.FORBIDDEN) == "4.03"


@pytest.mark.parametrize(("msg", "action", "topic"), [
    (_request(Code.POST, "ps/devices/a/t", payload=b"1"), PubSubAction.PUBLISH,
     "devices/a/t"),
    (_request(Code.PUT, "ps/devices/a/t"), PubSubAction.PUBLISH, "devices/a/t"),
    (_request(Code.GET, "ps/x", (int(Option.OBSERVE), b"")), PubSubAction.SUBSCRIBE, "x"),
    (_request(Code.GET, "ps/x", (int(Option.OBSERVE), b"\x01")), PubSubAction.UNSUBSCRIBE,
     "x"),
    (_request(Code.GET, "ps/x"), PubSubAction.READ, "x"),
])
def test_requests_map_to_topic_actions(msg: Message, action: PubSubAction, topic: str) -> None:
    req = interpret(msg)
    assert (req.action, req.topic) == (action, topic)


@pytest.mark.parametrize(("msg", "code"), [
    (_request(Code.POST, "other/x"), Code.NOT_FOUND),
    (_request(Code.POST, "ps"), Code.NOT_FOUND),
    (_request(Code.POST, "ps/devices/+/t"), Code.BAD_REQUEST),
    (_request(Code.POST, "ps/devices/#"), Code.BAD_REQUEST),
    (Message(MessageType.CON, Code.POST, 1, b"", ((int(Option.URI_PATH), b"ps"),
                                                   (int(Option.URI_PATH), b"a/b"))),
     Code.BAD_REQUEST),
    (Message(MessageType.CON, Code.POST, 1, b"", ((int(Option.URI_PATH), b"ps"),
                                                   (int(Option.URI_PATH), b"\xff"))),
     Code.BAD_REQUEST),
    (_request(Code.DELETE, "ps/x"), Code.METHOD_NOT_ALLOWED),
    (_request(Code.POST, "ps/x", (int(Option.BLOCK1), b"\x08")), Code.BAD_OPTION),
    (_request(Code.POST, "ps/x", (int(Option.URI_QUERY), b"a=b")), Code.BAD_OPTION),
    (_request(Code.GET, "ps/x", (int(Option.OBSERVE), b"\x05")), Code.BAD_REQUEST),
])
def test_requests_that_are_not_served(msg: Message, code: int) -> None:
    with pytest.raises(CoapRequestError) as caught:
        interpret(msg)
    assert caught.value.coap_code == code


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_MESSAGE + 64))
def test_any_bytes_parse_or_raise_the_codec_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except CoapMessageError:
        return
    assert parse_message(msg.encode()) == msg  # what parses re-encodes to the same message
    with contextlib.suppress(CoapRequestError):
        interpret(msg)


_options = st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=300)),
                    max_size=MAX_OPTIONS).map(lambda o: tuple(sorted(o, key=lambda x: x[0])))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MessageType), st.sampled_from([c for c in Code if c != Code.EMPTY]),
       st.integers(0, 0xFFFF), st.binary(max_size=8), _options, st.binary(max_size=200))
def test_messages_round_trip(mtype: MessageType, code: Code, mid: int, token: bytes,
                             options: tuple[tuple[int, bytes], ...], payload: bytes) -> None:
    msg = Message(mtype, code, mid, token, options, payload)
    data = msg.encode()
    if len(data) > MAX_MESSAGE:
        with pytest.raises(CoapMessageError):
            parse_message(data)
    else:
        assert parse_message(data) == msg


def test_block_options_and_a_bounded_reassembly() -> None:
    from iotsec.coap.blockwise import Assembly, Block, parse_block
    from iotsec.errors import CoapRequestError

    assert parse_block(Block(47, False, 2).encode()) == Block(47, False, 2)
    assert parse_block(b"") == Block(0, False, 0)
    for bad in (b"\x07", b"\x01\x02\x03\x04"):
        with pytest.raises(CoapRequestError):
            parse_block(bad)
    body = Assembly(szx=0, limit=40)
    assert not body.add(Block(0, True, 0), b"a" * 16)
    with pytest.raises(CoapRequestError) as skipped:
        body.add(Block(2, True, 0), b"b" * 16)
    assert skipped.value.coap_code == Code.REQUEST_ENTITY_INCOMPLETE
    assert not body.add(Block(1, True, 0), b"b" * 16)
    with pytest.raises(CoapRequestError) as large:
        body.add(Block(2, False, 0), b"c" * 16)
    assert large.value.coap_code == Code.REQUEST_ENTITY_TOO_LARGE
    assert body.add(Block(2, False, 0), b"c" * 8) and bytes(body.body) == \
        b"a" * 16 + b"b" * 16 + b"c" * 8


def test_a_block1_request_is_split_from_its_block_options() -> None:
    from iotsec.coap.blockwise import Block, block1_of

    sent = _request(Code.POST, "ps/a", (int(Option.BLOCK1), Block(0, True, 2).encode()),
                    (int(Option.SIZE1), encode_uint(100)), payload=b"x" * 64)
    block, bare = block1_of(sent)
    assert block == Block(0, True, 2)
    assert [n for n, _ in bare.options] == [int(Option.URI_PATH)] * 2
    assert (bare.code, bare.mid, bare.token, bare.payload) == \
        (sent.code, sent.mid, sent.token, sent.payload)
    # A Size1 over the limit is refused before any block is kept, a malformed one too.
    for size1, code in ((encode_uint(101), Code.REQUEST_ENTITY_TOO_LARGE),
                        (b"\x01" * 5, Code.BAD_OPTION)):
        with pytest.raises(CoapRequestError) as refused:
            block1_of(_request(Code.POST, "ps/a",
                               (int(Option.BLOCK1), Block(0, True, 2).encode()),
                               (int(Option.SIZE1), size1)), limit=100)
        assert refused.value.coap_code == code
    with pytest.raises(CoapRequestError) as none:
        block1_of(_request(Code.POST, "ps/a"))
    assert none.value.coap_code == Code.BAD_OPTION


def test_assemblies_are_bounded_and_a_refused_block_drops_its_body() -> None:
    from iotsec.coap.blockwise import Assemblies, Block

    bodies: Assemblies[str] = Assemblies(most=2, limit=40)
    with pytest.raises(CoapRequestError) as unknown:
        bodies.add("a", Block(0, True, 0), b"a" * 16)  # its first block was not accepted
    assert unknown.value.coap_code == Code.REQUEST_ENTITY_INCOMPLETE
    for key in ("a", "b", "c"):
        bodies.start(key, 0)
    assert len(bodies) == 2  # "a", the oldest, was dropped
    with pytest.raises(CoapRequestError):
        bodies.add("a", Block(0, True, 0), b"a" * 16)
    assert bodies.add("b", Block(0, True, 0), b"b" * 16) is None
    assert bodies.add("b", Block(1, False, 0), b"b" * 4) == b"b" * 20
    assert len(bodies) == 1  # a finished body is not kept
    with pytest.raises(CoapRequestError) as skipped:
        bodies.add("c", Block(1, True, 0), b"c" * 16)  # out of order
    assert skipped.value.coap_code == Code.REQUEST_ENTITY_INCOMPLETE
    assert len(bodies) == 0
    with pytest.raises(CoapRequestError):  # the body was dropped with its refused block
        bodies.add("c", Block(0, True, 0), b"c" * 16)
    bodies.start("d", 0)
    bodies.add("d", Block(0, True, 0), b"d" * 16)
    bodies.add("d", Block(1, True, 0), b"d" * 16)
    with pytest.raises(CoapRequestError) as large:
        bodies.add("d", Block(2, False, 0), b"d" * 16)
    assert large.value.coap_code == Code.REQUEST_ENTITY_TOO_LARGE
