"""Observe and block-wise transfer over OSCORE: aiocoap as the device observes a topic and
receives what an MQTT client publishes (a large message in blocks, whole), publishes a
large body in inner blocks; a replayed notification is not delivered twice; the gateway's
own sequence numbers stay above every one used before a restart; outer blocks are
reassembled before the message is verified."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.app.coap.oscore_contexts import SEQ_RANGE, OscoreContexts, provision_context
from iotsec.app.coap.oscore_endpoint import OscoreEndpoint
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from iotsec.coap import oscore as o
from iotsec.coap.blockwise import Block
from iotsec.coap.message import Code, Message, MessageType, Option, encode_uint, parse_message
from iotsec.device import DeviceClient
from tests.broker.support import Inbox, wait_for
from tests.coap.conftest import Fleet
from tests.coap.support import gateway
from tests.coap.test_oscore import aiocoap_context
from tests.coap.test_oscore_gateway import _derive, _device_key, _mqtt, _secret

TOPIC = "commands/alice/led"


def _path(topic: str) -> tuple[tuple[int, bytes], ...]:
    return tuple((Option.URI_PATH, level.encode()) for level in ["ps", *topic.split("/")])


def _observe(mid: int, token: bytes, topic: str, value: int = 0) -> Message:
    return Message(MessageType.CON, Code.GET, mid, token,
                   ((Option.OBSERVE, encode_uint(value)), *_path(topic)))


@dataclass
class Relay:
    address: tuple[str, int]
    #: Every datagram the gateway sent.
    seen: list[bytes]
    #: Sends a datagram to the client as if from the gateway (an attacker on the path).
    inject: Callable[[bytes], None]


@contextlib.contextmanager
def _relay(target: tuple[str, int]) -> Iterator[Relay]:
    """A UDP relay between one client and the gateway that keeps what the gateway sent."""
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.connect(target)
    front.settimeout(0.1)
    back.settimeout(0.1)
    seen: list[bytes] = []
    client: list[tuple[str, int]] = []
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                data, address = front.recvfrom(4096)
                if not client:
                    client.append(address)
                back.send(data)
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                data = back.recv(4096)
                seen.append(data)
                if client:
                    front.sendto(data, client[0])

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield Relay(front.getsockname(), seen, lambda data: front.sendto(data, client[0])
                    and None)
    finally:
        stop.set()
        thread.join(5)
        front.close()
        back.close()


def test_aiocoap_observes_and_sends_blocks_over_oscore(fleet: Fleet, tmp_path: Path) -> None:
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "alice", public)
    big = os.urandom(5000)
    large_publish = os.urandom(9000)
    inbox = Inbox()
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
            _mqtt(fleet, fleet.dash) as dash, _mqtt(fleet, fleet.alice) as watcher, \
            _relay(gw.oscore or ("", 0)) as relay:
        watcher.subscribe("devices/alice/#", inbox)
        host, port = relay.address

        async def run() -> tuple[list[bytes], str, str]:
            client = await aiocoap.Context.create_client_context()
            client.client_credentials[f"coap://{host}:{port}/*"] = aiocoap_context(
                tmp_path / "alice", sender=ctx.device_sender_id,
                recipient=ctx.gateway_sender_id, secret=_secret(key, ctx), salt=ctx.salt)
            got: list[bytes] = []
            try:
                request = client.request(aiocoap.Message(
                    code=aiocoap.GET, observe=0, uri=f"coap://{host}:{port}/ps/{TOPIC}"))
                first = await request.response
                assert str(first.code).startswith("2.05"), first
                # The notifications are read by a task of their own into a queue: a
                # timed-out wait then cancels only the queue's get. (Cancelling the
                # observation iterator's own wait would cancel the future it shares with
                # its next call, which then fails at once.)
                payloads: asyncio.Queue[bytes] = asyncio.Queue()

                async def consume() -> None:
                    async for note in request.observation:
                        payloads.put_nowait(bytes(note.payload))

                consumer = asyncio.create_task(consume())
                loop = asyncio.get_running_loop()

                async def next_payload(timeout: float) -> bytes:
                    while True:  # a late warm-up notification is skipped
                        payload = await asyncio.wait_for(payloads.get(), timeout)
                        if payload != b"warm-up":
                            return payload

                # The gateway's MQTT subscription is made at the registration: publish
                # until the first notification comes.
                for _ in range(30):
                    await loop.run_in_executor(None, dash.publish, TOPIC, b"warm-up")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(payloads.get(), 0.3)
                        break
                else:
                    raise AssertionError("no notification")
                for body in (b"on", b"off", big):
                    await loop.run_in_executor(None, dash.publish, TOPIC, body)
                    got.append(await next_payload(10))
                # The first notification sent again (a new message id: past the message
                # layer's deduplication) is not delivered: its number is not fresh.
                # (the "on" one: not a warm-up, which the client skips anyway)
                first_notification = [parse_message(d) for d in relay.seen
                                      if parse_message(d).type is MessageType.NON][-3]
                relay.inject(Message(first_notification.type, first_notification.code,
                                     (first_notification.mid + 7) & 0xFFFF,
                                     first_notification.token, first_notification.options,
                                     first_notification.payload).encode())
                await loop.run_in_executor(None, dash.publish, TOPIC, b"last")
                got.append(await next_payload(10))
                with pytest.raises(asyncio.TimeoutError):
                    got.append(await next_payload(1))
                request.observation.cancel()
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
                # A large publish: inner Block1 blocks, each protected on its own.
                posted = await client.request(aiocoap.Message(
                    code=aiocoap.POST, uri=f"coap://{host}:{port}/ps/devices/alice/blob",
                    payload=large_publish)).response
                # Another device's commands: the registration is refused (4.03).
                denied = await client.request(aiocoap.Message(
                    code=aiocoap.GET, observe=0,
                    uri=f"coap://{host}:{port}/ps/commands/bob/led")).response
            finally:
                await client.shutdown()
            return got, str(posted.code), str(denied.code)

        got, posted, denied = asyncio.run(run())
        assert got == [b"on", b"off", big, b"last"]
        assert posted.startswith("2.04"), posted
        assert denied.startswith("4.03"), denied
        assert wait_for(lambda: bool(inbox.messages), 5)
        assert [(m.topic, m.payload) for m in inbox.messages] == [
            ("devices/alice/blob", large_publish)]


def _subscribed(dash: DeviceClient, device: o.SecurityContext, rid: o.RequestId,
                sock: socket.socket) -> list[Message]:
    """Publish until a notification arrives: the gateway's MQTT subscription is made when
    the observation is registered, and a message published before its SUBACK is missed.
    The notifications received (protected)."""
    sock.settimeout(0.3)
    try:
        for _ in range(30):
            dash.publish(TOPIC, b"warm-up")
            with contextlib.suppress(TimeoutError):
                note = parse_message(sock.recv(2048))
                assert o.unprotect_response(device, rid, note).payload == b"warm-up"
                return [note]
        raise AssertionError("no notification")
    finally:
        sock.settimeout(5)


def _next_note(device: o.SecurityContext, rid: o.RequestId, sock: socket.socket,
               seen: list[Message]) -> Message:
    """The next notification that is not a late warm-up one (kept in ``seen``)."""
    while True:
        note = parse_message(sock.recv(2048))
        seen.append(note)
        if o.unprotect_response(device, rid, note).payload != b"warm-up":
            return note


@contextlib.contextmanager
def _observing(fleet: Fleet, token: bytes) -> Iterator[
        tuple[o.SecurityContext, o.RequestId, DeviceClient, socket.socket]]:
    """alice's OSCORE context, a gateway, the dashboard's MQTT client and a socket on which
    alice observes TOPIC (registered, and a first notification received): the device's
    context, the registration's request id, the dashboard and the socket."""
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "alice", public)
    device = _derive(key, ctx)
    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
            _mqtt(fleet, fleet.dash) as dash, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert gw.oscore is not None
        sock.settimeout(5)
        registration, rid = o.protect_request(device, _observe(1, token, TOPIC), 0)
        sock.sendto(registration.encode(), gw.oscore)
        assert o.unprotect_response(device, rid, parse_message(sock.recv(2048))).code \
            == Code.CONTENT
        _subscribed(dash, device, rid, sock)
        yield device, rid, dash, sock


def _notification_seq(message: Message) -> int:
    values = message.values(Option.OSCORE)
    assert len(values) == 1
    piv = o.parse_option(values[0]).piv
    assert piv, "a notification carries the gateway's own Partial IV"
    return int.from_bytes(piv, "big")


def test_sequence_numbers_after_a_restart_are_higher(fleet: Fleet) -> None:
    """The gateway's own sequence numbers (registration answers and notifications) grow,
    and after a restart start above every one used before; a replayed registration is
    refused."""
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "alice", public)
    device = _derive(key, ctx)
    used: list[int] = []
    seq = 0
    for run in range(2):
        with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
                _mqtt(fleet, fleet.dash) as dash, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            assert gw.oscore is not None
            sock.settimeout(5)
            token = bytes((run, 1))
            registration, rid = o.protect_request(device, _observe(100 + run, token, TOPIC),
                                                  seq)
            seq += 1
            sock.sendto(registration.encode(), gw.oscore)
            answer = parse_message(sock.recv(2048))
            used.append(_notification_seq(answer))
            inner = o.unprotect_response(device, rid, answer)
            assert inner.code == Code.CONTENT and answer.first(Option.OBSERVE) is not None
            notes = _subscribed(dash, device, rid, sock)
            for n in range(3):
                dash.publish(TOPIC, f"n{n}".encode())
                note = _next_note(device, rid, sock, notes)
                # Bound to the registration: it decrypts with its request id only.
                assert o.unprotect_response(device, rid, note).payload == f"n{n}".encode()
            for note in notes:
                assert note.type is MessageType.NON and note.token == token
                used.append(_notification_seq(note))
            # The registration replayed (a new message id): refused before it is read.
            again = Message(registration.type, registration.code, 200 + run,
                            registration.token, registration.options, registration.payload)
            sock.sendto(again.encode(), gw.oscore)
            refused = parse_message(sock.recv(2048))
            assert refused.code == Code.UNAUTHORIZED and refused.payload == b"Replay detected"
    assert used == sorted(set(used)), used
    # The second run started at the next range reserved, past every number of the first.
    second = used.index(next(n for n in used if n >= SEQ_RANGE))
    assert second >= 5 and used[second - 1] < SEQ_RANGE and len(used) - second >= 5, used


def test_outer_blocks_are_reassembled_before_verification(fleet: Fleet) -> None:
    """A protected publish cut into outer Block1 blocks (as a proxy would): 2.31 for each
    block, then verified and served as one; an altered block makes the whole fail."""
    key, public = _device_key()
    ctx = provision_context(fleet.rt, "alice", public)
    device = _derive(key, ctx)
    body = os.urandom(3000)
    inbox = Inbox()

    def send_in_blocks(sock: socket.socket, address: tuple[str, int], protected: Message,
                       first_mid: int, alter: bool = False) -> Message:
        payload = bytearray(protected.payload)
        if alter:
            payload[1500] ^= 1
        size = 512
        chunks = [bytes(payload[i:i + size]) for i in range(0, len(payload), size)]
        answer = None
        for num, chunk in enumerate(chunks):
            more = num < len(chunks) - 1
            block = Message(MessageType.CON, protected.code, first_mid + num, protected.token,
                            (*protected.options,
                             (Option.BLOCK1, Block(num, more, 5).encode())), chunk)
            sock.sendto(block.encode(), address)
            answer = parse_message(sock.recv(2048))
            if more:
                assert answer.code == Code.CONTINUE, answer
        assert answer is not None
        return answer

    with gateway(fleet.rt, fleet.mqtt_port, oscore_port=0) as gw, \
            _mqtt(fleet, fleet.alice) as watcher, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert gw.oscore is not None
        sock.settimeout(5)
        watcher.subscribe("devices/alice/#", inbox)
        post = Message(MessageType.CON, Code.POST, 1, b"ob", _path("devices/alice/big"), body)
        protected, rid = o.protect_request(device, post, 0)
        altered, _ = o.protect_request(device, post, 1)
        bad = send_in_blocks(sock, gw.oscore, altered, 300, alter=True)
        assert bad.code == Code.BAD_REQUEST, bad
        answer = send_in_blocks(sock, gw.oscore, protected, 100)
        assert o.unprotect_response(device, rid, answer).code == Code.CHANGED
        assert wait_for(lambda: bool(inbox.messages), 5)
    assert [(m.topic, m.payload) for m in inbox.messages] == [("devices/alice/big", body)]


def test_a_notification_stops_when_receiving_is_no_longer_allowed(fleet: Fleet) -> None:
    """The device's standing is read for each notification: once it is disabled, the
    observation ends with a protected 4.03 and an event."""
    from iotsec.app.identity.lifecycle import change_state
    from iotsec.identity.registry import DeviceState

    with _observing(fleet, b"st") as (device, rid, dash, sock):
        change_state(fleet.rt, "alice", DeviceState.DISABLED)
        dash.publish(TOPIC, b"secret")
        end = o.unprotect_response(device, rid, _next_note(device, rid, sock, []))
        assert end.code == Code.FORBIDDEN and b"secret" not in end.payload
        dash.publish(TOPIC, b"more")
        with pytest.raises(TimeoutError):
            sock.settimeout(1)
            sock.recv(2048)
    events = [e for e in list_events(fleet.rt.engine, kind="coap.notify")
              if e.outcome == "denied"]
    assert any(e.actor == "alice" and e.subject == TOPIC for e in events), events


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFF), st.binary(max_size=80)), max_size=6),
       st.binary(max_size=8))
def test_outer_blocks_never_crash_the_endpoint(crt: Runtime,
                                               blocks: list[tuple[int, bytes]],
                                               oscore: bytes) -> None:
    """Random outer Block1 values and payloads around a random OSCORE option: an answer
    each time, never an exception, and no more than the bound kept."""
    endpoint = OscoreEndpoint(crt, OscoreContexts(crt), None)
    for mid, (value, payload) in enumerate(blocks):
        message = Message(MessageType.CON, Code.POST, mid, bytes((mid,)),
                          ((Option.OSCORE, oscore), (Option.BLOCK1, encode_uint(value))),
                          payload)
        answer = endpoint.received(message.encode(), ("127.0.0.1", 40000 + mid % 3))
        assert answer is not None
        assert parse_message(answer).code in (Code.CONTINUE,) or \
            parse_message(answer).code >= 0x80


def test_a_removed_context_stops_notifying(fleet: Fleet) -> None:
    """Removing the context (another process, as the CLI does) stops its notifications
    within IOTSEC_HOT_CACHE_SECONDS, though the gateway holds reserved numbers."""
    import time

    from iotsec.app.coap.oscore_contexts import remove_context

    with _observing(fleet, b"rm") as (_device, _rid, dash, sock):
        remove_context(fleet.rt, "alice")
        time.sleep(fleet.rt.settings.hot_cache_seconds + 0.2)
        dash.publish(TOPIC, b"after")
        sock.settimeout(1.5)
        with pytest.raises(TimeoutError):
            sock.recv(2048)


_INNER = st.lists(st.tuples(st.sampled_from([Option.BLOCK1, Option.BLOCK2, Option.SIZE1,
                                             Option.OBSERVE, Option.ETAG, Option.SIZE2]),
                            st.binary(max_size=4)), max_size=4)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from([Code.GET, Code.POST, Code.PUT, Code.DELETE]),
                          _INNER, st.sampled_from(["devices/carol/t", "commands/carol/x",
                                                   "devices/other/t"]),
                          st.binary(max_size=300)), min_size=1, max_size=6))
def test_random_inner_options_never_crash_the_endpoint(
        crt: Runtime, requests: list[tuple[int, list[tuple[int, bytes]], str, bytes]]) -> None:
    """Verified requests with random inner block, Observe and size options: a protected
    answer every time, never an exception, nothing kept past the bounds."""
    from iotsec.app.identity.devices import NewDevice, add_device
    from iotsec.errors import ConflictError

    with contextlib.suppress(ConflictError):  # made by an earlier example
        add_device(crt, NewDevice.parse("carol"))
    key, public = _device_key()
    ctx = provision_context(crt, "carol", public, replace=True)
    device = _derive(key, ctx)
    endpoint = OscoreEndpoint(crt, OscoreContexts(crt), None)
    for seq, (code, options, topic, payload) in enumerate(requests):
        message = Message(MessageType.CON, code, seq, bytes((seq,)),
                          (*_path(topic), *options), payload)
        protected, rid = o.protect_request(device, message, seq)
        answer = endpoint.received(protected.encode(), ("127.0.0.1", 41000))
        assert answer is not None
        inner = o.unprotect_response(device, rid, parse_message(answer))
        assert inner.code >= 0x40
    assert len(endpoint._observations) <= 6
    assert all(len(a) <= 4 for a in endpoint._assemblies.values())
